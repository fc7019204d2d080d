"""Flood scope inference for writes to a chat: which calls one FLOOD_WAIT blocks.

Telegram limits writes per chat as well as per account and does not say which limit a
``FLOOD_WAIT_X`` on ``messages.sendMessage`` / ``messages.editMessage`` came from. Documented
for bots (core.telegram.org/bots/faq, "My bot is hitting limits"): about 1 message per second
in one chat, at most 20 messages per minute in one group, about 30 messages per second overall;
edits of one message are limited too (community reports: progress-bar edits flooded while other
chats are answered). So a write's flood is first taken to be the chat's, and widened only on
evidence that the account's limit was hit:

* **Chat first.** A server ``FLOOD_WAIT_X`` on a write to a chat (:data:`WRITE_METHODS` with a
  chat, or any request with a ``random_id`` into a chat) blocks that chat's writes only: key
  ``acct:<a>/writes:peer:<id>`` (:func:`~telethon_guard.keys.chat_flood_key`). Sends and edits
  to one chat share it (Telegram counts both against the chat). No further write reaches the
  chat until the wait has passed: the flooded call waits it out (when it fits) or fails with
  ``FloodWaitBlocked``; it is never re-sent at once. Other chats' writes go on undelayed. A
  chat's flood does not teach the method's adaptive pace either (that pace is account-wide).
* **Widened to the method, account-wide** (key ``acct:<a>/method:<m>``, as every other
  FLOOD_WAIT) when floods of that method come from ``flood_widen_chats`` different chats within
  ``flood_widen_window`` seconds, or when the flooded send was the last one a configured
  ``send_limits`` window allows (``count - 1`` sends accepted in the period before it): then
  the limit hit was the account's. While widened, every flood of the method blocks the method.
* **Narrowed again** after ``flood_narrow_after`` writes of the method to chats that did not
  flood succeed in a row (a flood of the method resets the count): the account limit is no
  longer being hit, chat floods are per chat again.
* ``SLOWMODE_WAIT_X`` stays per chat (``acct:<a>/slowmode:peer:<id>``), untouched here.

The thresholds are ours, not Telegram's (it publishes no scope): three chats is the fewest that
a bot with two busy groups does not widen on; 60 s is the group limit's window.
State is local to the process (like the adaptive pace); the blocks themselves are recorded in
the guard's storage, so other processes sharing it honour them. All times are seconds on the
guard's monotonic clock.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any

from .call import CallInfo
from .clock import Clock
from .config import GuardConfig
from .keys import is_send

WRITE_METHODS = frozenset(
    {
        "messages.sendMessage",
        "messages.sendMedia",
        "messages.sendMultiMedia",
        "messages.forwardMessages",
        "messages.sendInlineBotResult",
        "messages.editMessage",
        "messages.sendReaction",
        "messages.sendVote",
        "messages.sendScreenshotNotification",
        "messages.updatePinnedMessage",
    }
)
"""Writes into one chat whose FLOOD_WAIT is first scoped to that chat (with the chat known)."""

log = logging.getLogger("telethon_guard")

MAX_TRACKED = 1024
"""Most (account, method) flood histories kept (least recently flooded dropped first)."""


def is_chat_write(call: CallInfo) -> bool:
    """``True`` when ``call`` writes into one known chat (its FLOOD_WAIT is scoped here)."""
    return call.peer is not None and (call.method in WRITE_METHODS or is_send(call))


class _MethodFloods:
    """Recent floods of one (account, method): ``(time, chat)``, and whether it is wide."""

    __slots__ = ("flooded", "floods", "ok_run", "wide")

    def __init__(self) -> None:
        self.floods: deque[tuple[float, str]] = deque()
        self.flooded: set[str] = set()  # chats that flooded since the method was widened
        self.wide = False
        self.ok_run = 0


class FloodScopeTracker:
    """Decides whether a write's FLOOD_WAIT blocks its chat or its method (module docstring).

    ``config``: reads ``flood_widen_chats``, ``flood_widen_window``, ``flood_narrow_after``,
    ``send_limits`` and ``rate_margin``. ``clock``: the guard clock (monotonic seconds).
    Local state, bounded (:data:`MAX_TRACKED` methods; sends kept only as many as the largest
    ``send_limits`` count).
    """

    __slots__ = ("_clock", "_methods", "_narrow_after", "_send_windows", "_sends",
                 "_sends_cap", "_widen_chats", "_widen_window")

    def __init__(self, config: GuardConfig, clock: Clock) -> None:
        self._clock = clock
        self._widen_chats = config.flood_widen_chats
        self._widen_window = config.flood_widen_window
        self._narrow_after = config.flood_narrow_after
        margin = config.rate_margin
        self._send_windows = tuple((count, period + margin)
                                   for count, period in config.send_limits)
        most = max((c for c, _ in self._send_windows), default=0)
        self._sends: dict[str, deque[float]] = {}
        self._sends_cap = most
        self._methods: OrderedDict[tuple[str, str], _MethodFloods] = OrderedDict()

    def is_wide(self, account: str, method: str) -> bool:
        """``True`` while floods of ``method`` are taken as account-wide."""
        m = self._methods.get((account, method))
        return m is not None and m.wide

    def on_flood(self, call: CallInfo) -> bool:
        """Record a server FLOOD_WAIT on the chat write ``call``; return ``True`` when it blocks
        the method account-wide, ``False`` when it blocks ``call.peer``'s writes only."""
        assert call.peer is not None
        now = self._clock.now()
        key = (call.account, call.method)
        m = self._methods.get(key)
        if m is None:
            if len(self._methods) >= MAX_TRACKED:
                self._methods.popitem(last=False)
            m = self._methods[key] = _MethodFloods()
        else:
            self._methods.move_to_end(key)
        m.ok_run = 0
        floods = m.floods
        horizon = now - self._widen_window
        while floods and floods[0][0] <= horizon:
            floods.popleft()
        floods.append((now, call.peer))
        chats = {peer for _, peer in floods}
        if not m.wide and (len(chats) >= self._widen_chats or self._at_send_limit(call, now)):
            m.wide = True
            m.flooded = set(chats)
            log.warning("FLOOD_WAIT on %s widened to the account %s (floods from %d chat(s) in "
                        "%.0f s, or at the configured send limit)", call.method, call.account,
                        len(chats), self._widen_window)
        if m.wide:
            m.flooded.add(call.peer)
        return m.wide

    def _at_send_limit(self, call: CallInfo, now: float) -> bool:
        """The flooded send was the last one a configured ``send_limits`` window ``(count,
        period)`` allows: ``count - 1`` sends of the account were accepted in the ``period +
        rate_margin`` seconds before it (the limiter had paced the account to its limit)."""
        if not self._send_windows or not is_send(call):
            return False
        sends = self._sends.get(call.account, ())
        for count, period in self._send_windows:
            before = count - 1
            if before == 0 or (before <= len(sends) and sends[-before] > now - period):
                return True
        return False

    @property
    def counts_sends(self) -> bool:
        """``True`` when :meth:`on_success` records every send (``send_limits`` configured)."""
        return bool(self._sends_cap)

    @property
    def tracked(self) -> OrderedDict[tuple[str, str], Any]:
        """The live table of flooded ``(account, method)`` (empty: :meth:`on_success` of a
        call that is not a counted send does nothing). Read it, never change it."""
        return self._methods

    def on_success(self, call: CallInfo) -> None:
        """Count a write to ``call.peer`` that Telegram accepted (sends for ``send_limits``,
        successes in other chats for narrowing). Cheap for any other call."""
        peer = call.peer
        if peer is None:
            return
        self.on_write(call.account, call.method, peer, is_send(call))

    def on_write(self, account: str, method: str, peer: str, send: bool) -> None:
        """:meth:`on_success` of a call of ``method`` to ``peer`` (``send``: :func:`~telethon_
        guard.keys.is_send` of it) for a caller without a :class:`CallInfo` (the straight
        lane)."""
        if send and self._sends_cap:
            sends = self._sends.get(account)
            if sends is None:
                sends = self._sends[account] = deque(maxlen=self._sends_cap)
            sends.append(self._clock.now())
        methods = self._methods
        if not methods:
            return
        m = methods.get((account, method))
        if m is None or not m.wide or peer in m.flooded:
            return
        m.ok_run += 1
        if m.ok_run >= self._narrow_after:
            log.info("FLOOD_WAIT on %s narrowed to per chat for account %s (%d writes to "
                     "other chats succeeded)", method, account, m.ok_run)
            m.wide = False
            m.ok_run = 0
            m.flooded = set()
            m.floods.clear()


__all__ = ["MAX_TRACKED", "WRITE_METHODS", "FloodScopeTracker", "is_chat_write"]
