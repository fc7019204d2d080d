"""Faults on chosen calls: rpc errors, latency, lost replies, resets and stalls.

Calls are chosen by the server's 1-based ``RequestInfo.call_index`` (the count of that method
for that account, including this call, refused calls included: "the n-th call the server saw"),
every n-th call, a seeded probability and/or a total number of times (:class:`CallSelector`).
"""

from __future__ import annotations

from collections.abc import Collection

from telethon_guard.testing._types import (
    Action,
    Delay,
    DropReply,
    ReplyError,
    RequestInfo,
    ResetConnection,
    Stall,
)
from telethon_guard.testing.faults_base import (
    ACTION_TYPES,
    SERVICE_METHODS,
    CallSelector,
    MethodSpec,
    Rule,
    methods_of,
    positive,
)

__all__ = ["DropReplies", "ErrorOnCalls", "Latency", "OnCalls", "ResetOn", "StallOn"]


Calls = Collection[int] | int | None


def _selects_method(methods: frozenset[str] | None, method: str) -> bool:
    """Whether ``method`` is one of ``methods`` (``None``: every RPC method, the MTProto service
    calls of ``SERVICE_METHODS`` excluded)."""
    if methods is None:
        return method not in SERVICE_METHODS
    return method in methods


def _methods_repr(methods: frozenset[str] | None) -> str:
    return "None" if methods is None else repr(sorted(methods))


class OnCalls(Rule):
    """Answer chosen calls of ``method`` with a fixed ``action`` (the script mode's workhorse).

    ``OnCalls("messages.getHistory", range(31, 41), flood_wait(7))`` is "calls 31 to 40 of
    getHistory get FLOOD_WAIT_7". ``method``: a TL name, a Telethon request class, several, or
    ``None`` for every RPC method (MTProto service calls such as ping excluded).
    ``calls`` / ``every`` / ``probability`` / ``times``: see
    :class:`~telethon_guard.testing.faults_base.CallSelector` (they combine with AND; none
    given = every call). ``action``: any action of :mod:`telethon_guard.testing._types`.
    """

    def __init__(
        self,
        method: MethodSpec,
        calls: Calls,
        action: Action,
        *,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        if not isinstance(action, ACTION_TYPES):
            raise ValueError(
                f"not a fault action: {action!r}; pass an action object such as Stall(), "
                "flood_wait(5), Delay(1.0), ResetConnection() or CloseConnection() "
                "(from telethon_guard.testing.faults)")
        self.methods = methods_of(method)
        self.selector = CallSelector(calls, every, probability, times)
        self.action: Action = action

    def matches(self, info: RequestInfo) -> bool:
        """Whether ``info`` is a call of the rule's method(s).

        ``method=None`` matches every RPC method but not the MTProto service calls (ping,
        pingDelayDisconnect, destroySession...): name those explicitly to fault them.
        """
        return _selects_method(self.methods, info.method)

    def check(self, info: RequestInfo) -> list[Action]:
        if not self.matches(info):
            return []
        if not self.selector.selects(info.call_index, self.fired, self.rng):
            return []
        self.fired += 1
        return [self.action]

    def _args_repr(self) -> str:
        method = _methods_repr(self.methods)
        selector = repr(self.selector)
        return method + (", " + selector if selector else "") + self._scope_repr()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._args_repr()}, action={self.action!r})"


class ErrorOnCalls(OnCalls):
    """Answer chosen calls with ``rpc_error`` ``code`` / ``message`` (the call is not executed).

    Imitates Telegram's transient and flood errors (design-notes §3): ``500 INTERNAL``,
    ``500 RPC_CALL_FAIL`` / ``RPC_MCGET_FAIL``, ``-503 "Timeout"`` (Telegram's rpc_error when a
    backend times out), ``420 FLOOD_WAIT_X`` as a fixed answer. Examples::

        ErrorOnCalls("messages.getDialogs", 420, "FLOOD_WAIT_22", every=2)  # every 2nd call
        ErrorOnCalls("users.getUsers", 500, "RPC_CALL_FAIL", times=7)       # 7 times, then OK
        ErrorOnCalls(None, -503, "Timeout", probability=0.1)               # 10 % of all calls
    """

    def __init__(
        self,
        method: MethodSpec,
        code: int,
        message: str,
        *,
        calls: Calls = None,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        if (isinstance(code, bool) or not isinstance(code, int)
                or not (code < 0 or 300 <= code <= 599)):
            # rpc_error codes are 303 (migrate), 400-420 (caller), 500 (server) and Telegram's
            # negative ones (-503 "Timeout"); a 2xx code is not an error reply.
            raise ValueError(
                f"code must be an rpc_error code: 300-599 or negative (e.g. 420, 500, -503), "
                f"got {code!r}")
        if not isinstance(message, str) or not message or message.strip() != message:
            raise ValueError(f"message must be a non-empty error name, got {message!r}")
        super().__init__(
            method,
            calls,
            ReplyError(code, message),
            every=every,
            probability=probability,
            times=times,
            account=account,
            dc=dc,
        )

    def __repr__(self) -> str:
        assert isinstance(self.action, ReplyError)
        return f"ErrorOnCalls({self._args_repr()}, {self.action.code}, {self.action.message!r})"


class DropReplies(OnCalls):
    """Execute chosen calls but never send their reply (a reply lost on the way back).

    Imitates a reply Telegram never delivers (issue 2: "a reply never sent"); the client sees
    silence and only its own timeout ends the wait. The execution counts in rate windows.
    """

    def __init__(
        self,
        method: MethodSpec,
        calls: Calls = None,
        *,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(
            method,
            calls,
            DropReply(),
            every=every,
            probability=probability,
            times=times,
            account=account,
            dc=dc,
        )


class ResetOn(OnCalls):
    """Close the TCP connection abruptly on chosen calls.

    ``after_execute=False``: the request is never executed (a reset while it was on the wire);
    ``True``: executed, then the reset loses its reply (the "sendMessage executed, reply lost in
    a reset" case where a resend must not duplicate the message).
    """

    def __init__(
        self,
        method: MethodSpec,
        calls: Calls = None,
        *,
        after_execute: bool = False,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(
            method,
            calls,
            ResetConnection(after_execute=bool(after_execute)),
            every=every,
            probability=probability,
            times=times,
            account=account,
            dc=dc,
        )


class StallOn(OnCalls):
    """On chosen calls stop reading and writing on the connection, socket left open (half-open).

    Imitates a dead path that TCP does not report: the request is not executed, nothing more
    arrives on that connection, and only client-side timeouts or pings notice.
    """

    def __init__(
        self,
        method: MethodSpec,
        calls: Calls = None,
        *,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(
            method,
            calls,
            Stall(),
            every=every,
            probability=probability,
            times=times,
            account=account,
            dc=dc,
        )


class Latency(Rule):
    """Delay requests server-side by ``seconds`` (fixed) or uniformly in ``(lo, hi)`` (seeded).

    Imitates Telegram's processing latency per method; other connections are not blocked. Put
    it first in the plan to delay error answers too (evaluation stops at the first terminal
    action). ``method``: as :class:`OnCalls` (``None`` = every method); ``probability``: only
    that share of calls is delayed. Raises ``ValueError`` for negative or inverted bounds.
    """

    def __init__(
        self,
        method: MethodSpec = None,
        seconds: float | tuple[float, float] = 0.1,
        *,
        probability: float | None = None,
        account: int | None = None,
        dc: int | None = None,
    ) -> None:
        super().__init__(account=account, dc=dc)
        self.methods = methods_of(method)
        if isinstance(seconds, tuple):
            if len(seconds) != 2:
                raise ValueError(f"seconds range must be (lo, hi), got {seconds!r}")
            lo = positive(seconds[0], "seconds lo", allow_zero=True)
            hi = positive(seconds[1], "seconds hi", allow_zero=True)
            if hi < lo:
                raise ValueError(f"seconds range must have lo <= hi, got {seconds!r}")
            self.bounds = (lo, hi)
        else:
            value = positive(seconds, "seconds", allow_zero=True)
            self.bounds = (value, value)
        self.selector = CallSelector(probability=probability)

    def check(self, info: RequestInfo) -> list[Action]:
        if not _selects_method(self.methods, info.method):
            return []
        if not self.selector.selects(info.call_index, self.fired, self.rng):
            return []
        lo, hi = self.bounds
        self.fired += 1
        return [Delay(lo if lo == hi else self.rng.uniform(lo, hi))]

    def __repr__(self) -> str:
        method = _methods_repr(self.methods)
        lo, hi = self.bounds
        seconds = f"{lo:g}" if lo == hi else f"({lo:g}, {hi:g})"
        return f"Latency({method}, {seconds}{self._scope_repr()})"
