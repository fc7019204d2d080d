"""The network budget: the least time a network attempt needs before the call's deadline.

Policy, not time keeping (the clock lives in :mod:`telethon_guard.clock`): used by the rate
limiter (a slot leaving less is refused up front), the retry policy (no backoff into it) and the
terminal attempt (no attempt started with less; a deadline timeout counts for the breaker only
when the attempt had at least this much time).
"""

from __future__ import annotations

NETWORK_BUDGET_SHARE = 0.1
"""Share of a call's deadline budget a network attempt needs at least (see
:func:`network_budget`)."""
NETWORK_BUDGET_MAX = 1.0
"""Seconds: the network budget never exceeds this (nor ``attempt_timeout`` when set)."""


def network_budget(budget: float, attempt_timeout: float | None) -> float:
    """The least time (seconds) a network attempt must have before the call's deadline:
    ``min(attempt_timeout or NETWORK_BUDGET_MAX, NETWORK_BUDGET_SHARE * budget)``, ``budget``
    being the call's whole deadline budget in seconds.

    A call whose limiter / flood / backoff wait leaves less fails with ``DeadlineExceeded``
    without sending (an attempt that cannot get an answer in time tells nothing about the
    server), and a deadline timeout of an attempt counts as a breaker failure only when the
    attempt had at least this much time. 10 % of the budget keeps a call that never waited
    always allowed to try; the cap (1 s, a generous RTT; or the attempt timeout) keeps the
    budget small for long deadlines.
    """
    cap = NETWORK_BUDGET_MAX if attempt_timeout is None else attempt_timeout
    share = NETWORK_BUDGET_SHARE * budget
    return share if share < cap else cap


__all__ = ["NETWORK_BUDGET_MAX", "NETWORK_BUDGET_SHARE", "network_budget"]
