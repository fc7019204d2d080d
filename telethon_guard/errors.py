"""The typed errors telethon-guard raises.

Every error derives from :class:`GuardError` *and* from the exception type existing Telethon
code already catches, so ``except telethon.errors.FloodWaitError`` or ``except ConnectionError``
keep working after swapping in :class:`~telethon_guard.GuardedTelegramClient`.

Each error, what else it is an instance of, its attributes, and whether retrying later helps:

- ``FloodWaitBlocked`` (``telethon.errors.FloodWaitError``): ``seconds`` (int, rounded up),
  ``retry_after`` (float s), ``method``, ``scope``, ``from_server``. Yes, after ``retry_after``.
- ``SlowModeBlocked`` (``telethon.errors.SlowModeWaitError``): as above; the scope names the
  chat. Yes, after ``retry_after``; other chats are not blocked.
- ``FloodPremiumBlocked`` (``telethon.errors.FloodPremiumWaitError``): as above, scoped to file
  transfers on one DC. Yes, after ``retry_after``.
- ``CircuitOpenError`` (``ConnectionError``): ``key`` (account and DC), ``retry_after``,
  ``may_have_run``. Yes, after ``retry_after``. Raised too when the breaker opened during a
  call and refused its retry: ``__cause__`` is the last attempt's error and ``may_have_run``
  is ``True`` when that attempt may have run (re-send a send with its ``random_id``).
- ``TransportFloodError`` (``ConnectionError``): ``code`` (-429), ``retry_after``. Raised when
  the reconnect gives up (``max_reconnect_seconds``) before the call's deadline (else the call
  gets ``DeadlineExceeded``). Yes, after ``retry_after``.
- ``GuardConnectionError`` (``ConnectionError``): ``__cause__`` is Telethon's error. Yes.
- ``ClientDisconnectedError`` (``ConnectionError``): ``__cause__``. After ``connect()``.
- ``DeadlineExceeded`` (``TimeoutError``): ``deadline`` (float s), ``method``. Maybe, as a
  new call; the request may have been executed.
- ``AttemptTimeoutError`` (``TimeoutError``): ``timeout`` (float s), ``method``. The last
  attempt got no answer within ``attempt_timeout`` on a live connection and the retries
  (same request, same ``random_id``) ended with the deadline or ``retry_max_attempts``; the
  request may have run. Yes, re-sending the same request object (a delivered send then ends
  in ``AlreadyDelivered``); a new ``send_message`` may deliver the text twice.
- ``MayHaveRunError`` (``AttemptTimeoutError``): ``timeout``, ``method``. A request that is not
  idempotent (no ``random_id``, not a read; a send only as ``NotReroutedMayHaveRun``) got
  no answer within ``attempt_timeout``; never re-sent. Only once you know it did not run.
  Its subclasses ``ConnectionLostMayHaveRun`` (``telethon_guard.sender``: in flight when the
  connection was lost; ``timeout`` 0.0) and ``SilentConnectionMayHaveRun``
  (``telethon_guard.liveness``: in flight on a silent connection that was replaced): the same.
- ``AuthKeyInvalidError`` (``telethon.errors.AuthKeyNotFound``): ``code`` (-404), ``dc_id``.
  No: the session must be recreated.
- ``StorageUnavailableError`` (``ConnectionError``): ``backend``. Yes, once storage is back.
- ``GuardConfigError`` (``ValueError``): ``field``. No: fix the configuration.
- ``SessionStoreError``: ``path``; ``EntitiesNotStoredError`` (the request ran: ``executed``,
  ``result``, ``request``, ``method``; never retried, do not re-send) and ``SessionLockedError``
  (at connect, nothing sent; yes, once the other user of the file is gone).
- ``AlreadyDelivered`` (``telethon.errors.RandomIdDuplicateError``): ``random_id``,
  ``attempts``, ``request``; not the message nor its id (find it in the chat's latest
  messages). No: it was delivered.
- ``FloodWaitMultiError`` (``telethon.errors.MultiError`` *and* ``telethon.errors.FloodWaitError``):
  a batch whose every failed item is a FLOOD_WAIT; ``seconds`` / ``retry_after`` of the longest
  item, plus Telethon's ``exceptions``, ``results``, ``requests``. Yes, after ``retry_after``,
  re-sending only the failed items.

Batched requests (``await client([req_a, req_b])``): each item runs through the guard on its own,
so each item fails or succeeds with the typed error above that fits it. As in Telethon, when any
item fails the call raises ``telethon.errors.MultiError`` with one entry per request, in order:
``exceptions[i]`` (``None`` if item ``i`` succeeded), ``results[i]`` (``None`` if it failed) and
``requests[i]``; catch the items' types by looking at ``exceptions``. When every failed item is a
FLOOD_WAIT (``FloodWaitError``, e.g. ``FloodWaitBlocked``) the guard raises
:class:`FloodWaitMultiError` instead, which is also a ``FloodWaitError``, so the usual
``except FloodWaitError as e: await asyncio.sleep(e.seconds)`` catches it too (``seconds`` is the
longest item's wait; the items that succeeded are in ``results``: re-send only the others).
A batch of one request raises that request's error itself (Telethon's ``MultiError`` does that).

The client pool (:mod:`telethon_guard.pool`), each a ``PoolError`` with ``tenant``:

- ``UnknownTenantError`` (``KeyError``). No.
- ``TenantUnavailableError`` (``ConnectionError``): the tenant's factory or connect failed;
  ``__cause__``, ``retry_after``. Yes, after ``retry_after``; other tenants are unaffected.
- ``SessionInUseError`` (``ValueError``): ``other`` (the tenant using that session). No.
- ``PoolClosedError`` (``ConnectionError``). No.
- ``PoolExhaustedError`` (``ConnectionError``): ``max_connected``. Yes.
- ``NoAccountAvailableError`` (``telethon.errors.FloodWaitError``): worker mode, ``method``,
  ``accounts``, ``retry_after`` (``None``: none can become free). Yes, after ``retry_after``.
- ``NotReroutedMayHaveRun`` (``MayHaveRunError``, a ``TimeoutError``): worker mode, a write
  refused on ``tenant`` after an attempt there got no answer (``__cause__``: the
  ``FloodWaitBlocked`` / ``CircuitOpenError`` with ``may_have_run``); not re-routed. No: check
  whether it ran first.

``AlreadyDelivered``: Telegram answered ``RANDOM_ID_DUPLICATE`` to a (re-)send, i.e. an earlier
attempt of the same request (same ``random_id``) was executed and its reply was lost. The guard
never sends it again, so exactly one message is stored per logical send. It is *raised* rather
than returning ``None`` because Telethon's ``send_message`` needs the server's reply to build
the ``Message`` and returning ``None`` would surface later as an ``AttributeError``; existing code
that catches ``RandomIdDuplicateError`` keeps working. Treat it as success whose result is
unknown; never re-send with a new ``random_id``.

``TimeoutError`` and ``ConnectionError`` are ``OSError`` subclasses: Telethon's update loop treats
those as "network down, retry later" instead of dying, which is why the guard's fail-fast errors
use them.
"""

from __future__ import annotations

from collections.abc import Sequence

from telethon import errors as tl_errors
from telethon.tl.tlobject import TLRequest


class GuardWarning(UserWarning):
    """A misuse the guard can work around but the user should fix, issued with
    :func:`warnings.warn` (shown once per source line by Python's default filters, no logging
    setup needed; ``warnings.filterwarnings("ignore", category=GuardWarning)`` silences it,
    ``"error"`` makes it raise where the misuse happens, except for ``on_event`` callbacks).

    Issued for: a client class overriding Telethon's private ``_call`` (never called under the
    guard; pointing at the ``guard()`` / constructor call), ``guard()`` on a client that is
    already connected (pointing at that ``guard()`` call), and the first failure of each
    ``on_event`` callback (pointing at the callback's line that raised; later failures are
    only logged, at ERROR on the ``telethon_guard`` logger).
    """


class GuardError(Exception):
    """Base class of every error raised by telethon-guard.

    ``retry_after`` is the number of seconds (monotonic) after which trying again can succeed,
    or ``None`` when waiting does not help or the time is unknown.
    """

    retry_after: float | None = None


class _FloodBlockedMixin(GuardError):
    method: str
    scope: str
    from_server: bool
    may_have_run: bool = False
    """``True`` when an earlier attempt of the same call reached the network and got no
    answer (a reset or a dropped reply before this FLOOD_WAIT): the request may have run on
    this account (re-send the same request object here, never a new one elsewhere)."""


def _init_flood(
    err: _FloodBlockedMixin,
    base: type[tl_errors.RPCError],
    request: TLRequest | None,
    seconds_left: float,
    method: str,
    scope: str,
    from_server: bool,
) -> None:
    # Telethon's own constructor sets ``request``, ``seconds`` (whole seconds, rounded up here
    # so a caller sleeping ``seconds`` is never early) and the message.
    base.__init__(err, request, max(0, int(-(-seconds_left // 1))))
    err.retry_after = max(0.0, seconds_left)
    err.method = method
    err.scope = scope
    err.from_server = from_server


class FloodWaitBlocked(_FloodBlockedMixin, tl_errors.FloodWaitError):
    """A FLOOD_WAIT that does not fit the call's budget (``max_flood_wait`` or its deadline).

    Raised at once, without waiting. ``from_server`` is ``False`` when the flood ledger
    answered locally from a wait Telegram announced earlier (no network call was made).
    ``scope`` names what is blocked, e.g. ``"account:42/method:messages.getHistory"``.
    """

    def __init__(
        self,
        request: TLRequest | None,
        seconds_left: float,
        *,
        method: str,
        scope: str,
        from_server: bool,
    ) -> None:
        _init_flood(self, tl_errors.FloodWaitError, request, seconds_left, method, scope,
                    from_server)


class SlowModeBlocked(_FloodBlockedMixin, tl_errors.SlowModeWaitError):
    """SLOWMODE_WAIT for one chat that does not fit the call's budget; other chats are free."""

    def __init__(
        self,
        request: TLRequest | None,
        seconds_left: float,
        *,
        method: str,
        scope: str,
        from_server: bool,
    ) -> None:
        _init_flood(self, tl_errors.SlowModeWaitError, request, seconds_left, method, scope,
                    from_server)


class FloodPremiumBlocked(_FloodBlockedMixin, tl_errors.FloodPremiumWaitError):
    """FLOOD_PREMIUM_WAIT on file transfers of one DC that does not fit the call's budget."""

    def __init__(
        self,
        request: TLRequest | None,
        seconds_left: float,
        *,
        method: str,
        scope: str,
        from_server: bool,
    ) -> None:
        _init_flood(self, tl_errors.FloodPremiumWaitError, request, seconds_left, method,
                    scope, from_server)


class CircuitOpenError(GuardError, ConnectionError):
    """The circuit breaker for ``key`` (account and DC) is OPEN: failing fast, no network call.

    ``retry_after``: seconds until the breaker lets a probe through. ``may_have_run``:
    ``False`` when the call was refused before any attempt (nothing sent); ``True`` when the
    breaker refused the *retry* of a call whose last attempt reached the network and may have
    run (it timed out, or the connection broke, with no answer): that attempt's error is the
    ``__cause__`` (e.g. :class:`AttemptTimeoutError`). A send refused that way may have been
    delivered: re-send the same request object (same ``random_id``: a delivered one ends in
    :class:`AlreadyDelivered`), not a new ``send_message``."""

    def __init__(self, key: str, retry_after: float, *, refused_retry: str | None = None,
                 may_have_run: bool = False) -> None:
        msg = f"circuit breaker {key} is OPEN; retry after {retry_after:.3f} s"
        if refused_retry is not None:
            msg += (f" (the retry of {refused_retry} was refused"
                    + ("; its last attempt may have run)" if may_have_run else ")"))
        super().__init__(msg)
        self.key = key
        self.retry_after = retry_after
        self.may_have_run = may_have_run


class TransportFloodError(GuardError, ConnectionError):
    """Telegram answered transport error ``code`` (-429: too many connections or requests from
    this IP) and the paced reconnect gave up: no reconnect attempt fit within
    ``max_reconnect_seconds`` of the outage's first failure. The calls still waiting get it
    then, new calls at once until a reconnect succeeds (``retry_after``: seconds to the next
    attempt); also raised when ``auto_reconnect`` is off. A call whose deadline comes first gets
    :class:`DeadlineExceeded` instead. Counts toward the breaker."""

    def __init__(self, code: int, retry_after: float | None, message: str = "") -> None:
        super().__init__(message or f"transport error {code}; reconnecting is paced")
        self.code = code
        self.retry_after = retry_after


class GuardConnectionError(GuardError, ConnectionError):
    """The connection dropped and the call could not be completed within its budget.
    ``__cause__`` holds Telethon's original error."""


class ConnectionRetriesExhausted(GuardConnectionError):
    """``connect()`` made no connection within Telethon's ``connection_retries``: that many
    connections plus one were opened (or tried) and each was lost, refused or closed before
    the connection's init request was answered. Raised by ``connect()`` whatever
    ``connect_timeout`` is (it may come sooner); the guard does not retry it. ``retry_after``
    is ``None``."""

    retry_after: float | None = None


class ClientDisconnectedError(GuardError, ConnectionError):
    """The client is disconnected on purpose (``client.disconnect()``, or never connected):
    the call was not sent, or its answer can no longer arrive. Not retried and not a breaker
    failure; call ``connect()`` first. (A DC switch's brief disconnect is not this: calls
    caught in it get ``GuardConnectionError`` and are retried.)"""


class DeadlineExceeded(GuardError, TimeoutError):
    """The call's ``deadline`` (seconds, covering limiter waits, flood waits, backoff and the
    network) ran out. The request may still have been executed by Telegram."""

    def __init__(self, method: str, deadline: float) -> None:
        super().__init__(f"{method}: deadline of {deadline:.3f} s exceeded")
        self.method = method
        self.deadline = deadline


class AuthKeyInvalidError(GuardError, tl_errors.AuthKeyNotFound):
    """Transport -404: the server does not know this auth key. Permanent: the session must be
    recreated (log in again); the guard does not reconnect in a loop."""

    def __init__(self, dc_id: int | None = None, code: int = -404) -> None:
        # One line (Telethon's AuthKeyNotFound takes its multi-line class docstring).
        where = f" on DC {dc_id}" if dc_id is not None else ""
        Exception.__init__(self, f"transport error {code}{where}: the server does not know "
                           "this auth key; the session must be recreated (log in again)")
        self.code = code
        self.dc_id = dc_id

    def __reduce__(self) -> tuple[type[AuthKeyInvalidError], tuple[int | None, int]]:
        return (type(self), (self.dc_id, self.code))  # pickles with its dc_id and code


class StorageUnavailableError(GuardError, ConnectionError):
    """Shared guard state (e.g. Redis) is unreachable and the policy is ``fail``."""

    def __init__(self, backend: str, message: str = "") -> None:
        super().__init__(message or f"guard storage {backend} is unavailable")
        self.backend = backend


class GuardConfigError(GuardError, ValueError):
    """A guard setting is invalid; raised at construction, naming the ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class AttemptTimeoutError(GuardError, TimeoutError):
    """One network attempt exceeded ``GuardConfig.attempt_timeout`` (``timeout`` seconds) and the
    retry budget ended. The request may still have been executed by Telegram."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(f"{method}: no answer within the attempt timeout of {timeout:.3f} s")
        self.method = method
        self.timeout = timeout


class MayHaveRunError(AttemptTimeoutError):
    """A request that is not idempotent (no ``random_id`` for Telegram to de-duplicate, and not a
    read: see :func:`telethon_guard.keys.is_idempotent`) got no answer within
    ``GuardConfig.attempt_timeout`` (``timeout`` seconds). It was sent and **may have run**, so
    the guard does not send it again; check the effect before retrying. Final (never retried),
    an :class:`AttemptTimeoutError` and a ``TimeoutError``."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(method, timeout)
        self.args = (f"{method}: no answer within the attempt timeout of {timeout:.3f} s; "
                     "not idempotent, so not sent again (it may have run)",)


class SessionStoreError(GuardError):
    """The session's SQLite file could not be written (``sqlite3.OperationalError`` as
    ``__cause__``, e.g. ``database is locked`` while another process or thread holds a write
    lock on it). ``path``: the session file (``None`` when unknown). Subclasses say when it
    happened: :class:`EntitiesNotStoredError` (after a request ran), :class:`SessionLockedError`
    (at connect)."""

    def __init__(self, message: str, path: str | None) -> None:
        super().__init__(message)
        self.path = path


class EntitiesNotStoredError(SessionStoreError):
    """The request **ran** at Telegram (``executed`` is ``True``, its answer is ``result``), but
    Telethon could not store the entities of the answer in the session file ``path``. Never
    retried by the guard; do not send it again (a message would be sent twice): use
    ``result``. ``method`` is the TL name of the request, ``request`` the request."""

    executed = True

    def __init__(self, method: str, request: object, result: object, path: str | None,
                 cause: BaseException) -> None:
        super().__init__(
            f"{method} ran at Telegram (its result is attached as .result) but its entities "
            f"could not be stored in the session file {path!r}: {cause}; do not send it again",
            path)
        self.method = method
        self.request = request
        self.result = result


class SessionLockedError(SessionStoreError):
    """``connect()`` could not write the session file ``path``: another process or thread
    holds it locked (or it is read-only). Nothing was sent. Retry once the other user of the
    file is gone, or give each client its own session file."""


class AlreadyDelivered(GuardError, tl_errors.RandomIdDuplicateError):
    """``RANDOM_ID_DUPLICATE``: Telegram already executed this request (same ``random_id``),
    typically by an earlier attempt whose reply was lost: the message was delivered, once. Not
    re-sent; the result is unknown: it carries ``random_id`` and ``request`` (Telethon's), not
    the message nor its id (a fetched ``Message`` has no ``random_id``: look for it among the
    chat's latest messages, ``client.get_messages(peer, limit=...)``).
    ``attempts`` is how many network attempts the call made (``1``: the first attempt already
    collided, e.g. the caller re-used the request object)."""

    def __init__(self, request: TLRequest | None, random_id: int | None, attempts: int) -> None:
        tl_errors.RandomIdDuplicateError.__init__(self, request)
        self.random_id = random_id
        self.attempts = attempts
        self.retry_after = None


# ---- the client pool (telethon_guard.pool) ---------------------------------------------------


class PoolError(GuardError):
    """Base class of the errors of :class:`~telethon_guard.pool.GuardedClientPool`;
    ``tenant`` is the tenant id the error is about (``None`` for the whole pool)."""

    tenant: object = None


class UnknownTenantError(PoolError, KeyError):
    """The session factory knows no such tenant (it returned ``None`` or raised ``KeyError``).
    Retrying does not help."""

    def __init__(self, tenant: object) -> None:
        KeyError.__init__(self, f"unknown tenant {tenant!r}")
        self.tenant = tenant

    def __str__(self) -> str:
        return str(self.args[0])


class TenantUnavailableError(PoolError, ConnectionError):
    """This tenant's client cannot be used: its session factory raised, or its connect failed
    (``__cause__`` is the original error). Other tenants are not affected. ``retry_after``
    (seconds) is how long the pool refuses to try this tenant again."""

    def __init__(self, tenant: object, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.retry_after = retry_after


class SessionInUseError(PoolError, ValueError):
    """The tenant's session (same session object, file or auth key) is already used by another
    client of this pool (``other`` is that client's tenant): one session must never serve two
    clients at once. Retrying does not help; fix the factory."""

    def __init__(self, tenant: object, other: object) -> None:
        super().__init__(f"tenant {tenant!r}: its session is already in use by tenant {other!r}")
        self.tenant = tenant
        self.other = other


class PoolClosedError(PoolError, ConnectionError):
    """The pool is closed (or closed while this call was in flight). Retrying does not help."""

    def __init__(self, tenant: object = None, message: str = "the client pool is closed") -> None:
        super().__init__(message)
        self.tenant = tenant


class PoolExhaustedError(PoolError, ConnectionError):
    """Every connected client is in use and the pool is at ``max_connected``: no idle client
    could be disconnected within the wait. Yes, retry later (``retry_after`` is ``None``)."""

    def __init__(self, tenant: object, max_connected: int, waited: float) -> None:
        super().__init__(f"tenant {tenant!r}: {max_connected} clients connected and all in use "
                         f"(waited {waited:.1f} s)")
        self.tenant = tenant
        self.max_connected = max_connected


class NoAccountAvailableError(PoolError, tl_errors.FloodWaitError):
    """Worker mode: every account is blocked for ``method`` (FLOOD_WAIT, a learned pace, its
    configured limits, an OPEN breaker or a broken session). ``retry_after`` (float s) is the
    earliest time one is free (``seconds`` rounded up, as ``FloodWaitError``); ``None`` when
    that time is unknown (every account reconnecting, or its breaker's probe out)."""

    def __init__(self, method: str, retry_after: float | None, accounts: int) -> None:
        seconds = 0 if retry_after is None else max(0, int(-(-retry_after // 1)))
        tl_errors.FloodWaitError.__init__(self, None, seconds)
        self.method = method
        self.retry_after = retry_after
        self.accounts = accounts

    def __str__(self) -> str:
        when = ("when one will be is unknown (reconnecting, or a breaker probe is out)"
                if self.retry_after is None
                else f"the first is free in {self.retry_after:.1f} s")
        return f"{self.method}: none of {self.accounts} accounts is free; {when}"


class NotReroutedMayHaveRun(PoolError, MayHaveRunError):
    """Worker mode: a write (``method`` not a read, :func:`telethon_guard.keys.is_idempotent`)
    was refused on account ``tenant`` (``FloodWaitBlocked`` or ``CircuitOpenError``, the
    ``__cause__``) after an earlier attempt of it there got no answer (a reset or a dropped
    reply: the refusal's ``may_have_run``), so it may have run there: the router does not send
    it again on another account, where it would be a new request (a new ``random_id``: a
    second message). Final: check whether it ran before sending again; ``retry_after`` is
    ``None``, ``timeout`` ``0.0``. A :class:`MayHaveRunError` (a ``TimeoutError``)."""

    def __init__(self, method: str, tenant: object) -> None:
        MayHaveRunError.__init__(self, method, 0.0)
        self.tenant = tenant
        self.retry_after = None
        self.args = (f"{method}: refused on account {tenant!r} after an attempt there got no "
                     "answer; it may have run there, so it is not re-routed to another "
                     "account",)


class FloodWaitMultiError(GuardError, tl_errors.MultiError, tl_errors.FloodWaitError):
    """A batch (list of requests) in which every failed item is a FLOOD_WAIT.

    Telethon's ``MultiError`` (``exceptions``, ``results``, ``requests``: one entry per request,
    in order; ``None`` where an item succeeded or failed) that is *also* a ``FloodWaitError``, so
    code written for single calls (``except FloodWaitError as e: await asyncio.sleep(e.seconds)``)
    catches it. ``seconds`` (int, rounded up) and ``retry_after`` (float s, monotonic) are those
    of the longest-blocked item: after that every item is free again. ``request`` is that item's
    request. Items that succeeded keep their results: re-send only the failed ones
    (:meth:`failed_requests`). Raised by :func:`batch_error`, never for a batch of one.
    """

    exceptions: list[BaseException | None]
    results: list[object]
    requests: list[TLRequest]

    def __init__(
        self,
        exceptions: Sequence[BaseException | None],
        result: Sequence[object],
        requests: Sequence[TLRequest],
    ) -> None:
        # MultiError.__new__ has set exceptions / results / requests.
        floods = [e for e in exceptions if isinstance(e, tl_errors.FloodWaitError)]
        longest = max(floods, key=_flood_seconds) if floods else None
        seconds_left = _flood_seconds(longest) if longest is not None else 0.0
        tl_errors.FloodWaitError.__init__(
            self, getattr(longest, "request", None), max(0, int(-(-seconds_left // 1))))
        self.retry_after = max(0.0, seconds_left)
        failed = len(floods)
        Exception.__init__(
            self,
            f"{failed} of {len(exceptions)} batched requests hit a FLOOD_WAIT; the longest "
            f"wait is {self.seconds} s",
        )

    def failed_requests(self) -> list[TLRequest]:
        """The requests of the items that failed, in order (the ones to re-send)."""
        return [r for r, e in zip(self.requests, self.exceptions, strict=False) if e is not None]

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.exceptions, self.results, self.requests)


def _flood_seconds(err: BaseException | None) -> float:
    """Seconds a flood item asks to wait: the guard's float ``retry_after`` when it has one,
    else Telethon's whole ``seconds``."""
    retry_after = getattr(err, "retry_after", None)
    if isinstance(retry_after, (int, float)):
        return float(retry_after)
    return float(getattr(err, "seconds", 0) or 0)


def batch_error(
    exceptions: Sequence[BaseException | None],
    results: Sequence[object],
    requests: Sequence[TLRequest],
) -> BaseException:
    """The error a batch (list of requests) raises when at least one item failed.

    :class:`FloodWaitMultiError` when every failed item is a ``FloodWaitError`` and the batch
    has more than one request; otherwise Telethon's own ``MultiError`` (which, for a batch of
    one, is that item's error itself). Raises ``ValueError`` / ``TypeError`` like
    ``MultiError`` on mismatched lengths or non-request items.
    """
    failed = [e for e in exceptions if e is not None]
    if (len(requests) > 1 and failed
            and all(isinstance(e, tl_errors.FloodWaitError) for e in failed)):
        return FloodWaitMultiError(exceptions, results, requests)
    error: BaseException = tl_errors.MultiError(exceptions, results, requests)
    return error


__all__ = [
    "AlreadyDelivered",
    "AttemptTimeoutError",
    "AuthKeyInvalidError",
    "CircuitOpenError",
    "ClientDisconnectedError",
    "ConnectionRetriesExhausted",
    "DeadlineExceeded",
    "EntitiesNotStoredError",
    "FloodPremiumBlocked",
    "FloodWaitBlocked",
    "FloodWaitMultiError",
    "GuardConfigError",
    "GuardConnectionError",
    "GuardError",
    "GuardWarning",
    "MayHaveRunError",
    "NoAccountAvailableError",
    "NotReroutedMayHaveRun",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "SessionInUseError",
    "SessionLockedError",
    "SessionStoreError",
    "SlowModeBlocked",
    "StorageUnavailableError",
    "TenantUnavailableError",
    "TransportFloodError",
    "UnknownTenantError",
]
