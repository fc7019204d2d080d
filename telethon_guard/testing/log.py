"""Ground truth: the test server's append-only log of requests and connection events.

Every decoded request the server handles ends in exactly one :class:`LogEntry` (kind
``"request"``) with its outcome; every TCP connection adds ``"opened"`` and ``"closed"``
entries (or one ``"refused"`` entry when the DC was refusing connections), and every packet
a silenced connection discards (a fault plan's ``OnLiveConnections("silence")``) adds one
``"silenced"`` entry (never decoded, so no method). Times are the
server's monotonic clock (``time.monotonic()``), in seconds.

Outcomes of a request:

=================== ==============================================================
``"ok"``            executed and answered with a result
``"rpc_error"``     answered with ``rpc_error`` (``error_code`` / ``error_message``), from
                    the fault plan (``FLOOD_WAIT``...) or the world (``RANDOM_ID_DUPLICATE``...)
``"dropped"``       reply never sent (``DropReply``, or the connection closed or stalled
                    while the request was running)
``"reset"``         connection reset, before or after executing
``"transport_error"`` a transport error was sent instead of a reply (``error_code``)
``"stalled"``       the connection stalled on this request (never executed)
=================== ==============================================================

``executed`` is True when the request took effect: the world ran it and returned a result
(whatever happened to the reply afterwards). Requests refused by a fault or by the world
(an ``rpc_error``) are not executed; :meth:`ServerLog.times`, :meth:`ServerLog.max_in_window`
and :meth:`ServerLog.duplicates` count executed requests only. An internal server error
(``500 INTERNAL``) is logged as executed, since its effect is unknown.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from telethon_guard.testing.faults_base import known_methods

Outcome = Literal["ok", "rpc_error", "dropped", "reset", "transport_error", "stalled"]
Kind = Literal["request", "opened", "closed", "refused", "silenced"]


@dataclass(slots=True)
class LogEntry:
    """One line of the ground-truth log (see the module docstring for the fields' meaning)."""

    time: float  # monotonic seconds
    kind: Kind
    conn_id: int
    dc_id: int
    account: int | None = None
    method: str | None = None
    msg_id: int | None = None
    random_id: int | None = None
    outcome: Outcome | None = None
    executed: bool = False
    error_code: int | None = None
    error_message: str | None = None
    detail: str | None = None  # why a connection closed / was refused
    framing: str | None = None  # "full" / "intermediate" / "abridged" (requests)


class ServerLog:
    """Append-only list of :class:`LogEntry`, with the queries tests need.

    Only the server appends; readers may iterate at any time (``list(log)``, ``log.entries``).
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    # ---- writing (server side) -------------------------------------------------------------

    def append(self, entry: LogEntry) -> None:
        self.entries.append(entry)

    # ---- reading -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(list(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def requests(
        self,
        method: str | None = None,
        outcome: Outcome | None = None,
        account: int | None = None,
        dc_id: int | None = None,
    ) -> list[LogEntry]:
        """Request entries matching every given filter (``None`` matches anything).

        Raises:
            ValueError: ``method`` is neither a TL method name nor a name in this log, or
                ``outcome`` is not an :data:`Outcome` (a typo would otherwise match nothing
                and make a check such as ``max_in_window(...) <= 5`` pass vacuously).
        """
        self._check_filters(method, outcome)
        return [
            e
            for e in self.entries
            if e.kind == "request"
            and (method is None or e.method == method)
            and (outcome is None or e.outcome == outcome)
            and (account is None or e.account == account)
            and (dc_id is None or e.dc_id == dc_id)
        ]

    def _check_filters(self, method: str | None, outcome: str | None) -> None:
        if outcome is not None and outcome not in get_args(Outcome):
            raise ValueError(f"unknown outcome {outcome!r}: one of {', '.join(get_args(Outcome))}")
        if method is None or any(e.method == method for e in self.entries):
            return
        if method not in known_methods():
            raise ValueError(
                f"unknown TL method {method!r}: use the TL name, e.g. 'messages.getHistory'"
            )

    def count(
        self,
        method: str | None = None,
        outcome: Outcome | None = None,
        account: int | None = None,
        dc_id: int | None = None,
    ) -> int:
        """Number of request entries matching the filters."""
        return len(self.requests(method, outcome, account, dc_id))

    def executed(self, method: str | None = None, account: int | None = None) -> list[LogEntry]:
        """Request entries the world actually executed (whatever the client saw)."""
        return [e for e in self.requests(method, None, account) if e.executed]

    def times(self, method: str, account: int | None = None) -> list[float]:
        """Monotonic times (seconds) at which ``method`` was executed, ascending."""
        return sorted(e.time for e in self.executed(method, account))

    def max_in_window(
        self, method: str, window_seconds: float, account: int | None = None
    ) -> int:
        """Most executions of ``method`` inside any sliding window of ``window_seconds``.

        The window is half-open, ``[t, t + window_seconds)``, so calls exactly one window
        apart count in different windows.
        """
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        ts = self.times(method, account)
        best = 0
        for i, t in enumerate(ts):
            j = bisect.bisect_left(ts, t + window_seconds - 1e-9, lo=i)
            best = max(best, j - i)
        return best

    def duplicates(self, method: str = "messages.sendMessage") -> dict[int, int]:
        """``{random_id: times executed}`` for random_ids of ``method`` executed more than once."""
        counts = Counter(
            e.random_id for e in self.executed(method) if e.random_id is not None
        )
        return {rid: n for rid, n in counts.items() if n > 1}

    def connections_opened(self, dc_id: int | None = None) -> int:
        """TCP connections accepted and served (refused ones excluded)."""
        return self._events("opened", dc_id)

    def connections_refused(self, dc_id: int | None = None) -> int:
        """TCP connections answered with the refusal transport error and closed at once."""
        return self._events("refused", dc_id)

    def connections_closed(self, dc_id: int | None = None) -> int:
        return self._events("closed", dc_id)

    def packets_silenced(self, conn_id: int | None = None) -> int:
        """Packets read and discarded on silenced connections (of ``conn_id``, or all)."""
        return sum(
            1
            for e in self.entries
            if e.kind == "silenced" and (conn_id is None or e.conn_id == conn_id)
        )

    def transport_errors_sent(self, dc_id: int | None = None) -> int:
        """Transport errors written: as a request outcome, on refusals and on -404."""
        return sum(
            1
            for e in self.entries
            if (dc_id is None or e.dc_id == dc_id)
            and (
                (e.kind == "request" and e.outcome == "transport_error")
                or (e.kind in ("refused", "closed") and e.error_code is not None)
            )
        )

    def summary(self) -> dict[str, dict[str, int]]:
        """``{method: {outcome: count}}`` over every request entry (handy in failure messages)."""
        out: dict[str, dict[str, int]] = {}
        for e in self.entries:
            if e.kind == "request":
                per = out.setdefault(e.method or "?", {})
                per[e.outcome or "?"] = per.get(e.outcome or "?", 0) + 1
        return out

    def events(self, kind: Kind | None = None) -> list[LogEntry]:
        return [e for e in self.entries if kind is None or e.kind == kind]

    def _events(self, kind: Kind, dc_id: int | None) -> int:
        return sum(
            1 for e in self.entries if e.kind == kind and (dc_id is None or e.dc_id == dc_id)
        )
