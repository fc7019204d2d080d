"""Give-back across processes on Redis: the release that announces it, the move-up that uses it.

A waiter holds a limiter reservation: a future slot, committed in the sorted set of every
limiter key of its call (:mod:`telethon_guard.storage.redis_scripts`). When a waiter is
cancelled or misses its deadline it gives its slot back (:data:`RELEASE`). If the slot lay in
the future, the release also bumps the account's *give-back epoch*, a counter at
``<prefix>:gb:{acct:<a>}`` (the account's hash tag: same cluster slot as its limiter keys).

Waiters of every process move up with :data:`MOVE_UP`: one script per (process, account) per
round, run by :class:`~telethon_guard.limiter_moveup.SharedMoveUp` every
``MOVE_UP_INTERVAL`` seconds while the process has waiters. It reads the epoch; when it equals
the one the process last saw nothing has been given back and the script returns at once (one
``GET``). Otherwise each waiter given (in its process's FIFO order) is re-placed: its new slot
is the earliest at which every window of every key has room counting only the reservations
*ahead of it* (score strictly below its current slot), and it moves only if that is earlier.

Why moving earlier is safe for every reservation behind it: for a window ``(n, p)``, any
interval of length ``p`` containing the new slot and some later reservation also contained the
old slot (the old slot lies between them), so its count is unchanged; an interval with only
reservations ahead holds at most ``n - 1`` of them by construction. Order: a process's own
waiters are re-placed in FIFO order; with one-call windows (``n == 1``, e.g. a pace) "the
latest ahead of me, plus p" can never put a waiter before one that has not moved up yet, so
the queue keeps its order across processes; with larger counts a waiter may move ahead of
another process's waiter that has not re-checked yet (windows hold either way).
"""

from __future__ import annotations

GIVE_BACK_TTL_MS = 3_600_000
"""Milliseconds a give-back epoch key lives after its last bump (if it expires, the next round
of every process sees a different epoch and does one full move-up pass: harmless)."""

RELEASE = """
-- KEYS[1 .. #KEYS - 1]: the limiter keys of a reservation; KEYS[#KEYS]: the account's
-- give-back epoch key. ARGV[1]: the token. Bumps the epoch when a slot in the future was
-- given back (waiters, here and in other processes, may move up).
local _t = redis.call('TIME')
local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000
local future = false
for i = 1, #KEYS - 1 do
  local s = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if s then
    if tonumber(s) > now then future = true end
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
end
if future then
  redis.call('INCR', KEYS[#KEYS])
  redis.call('PEXPIRE', KEYS[#KEYS], """ + str(GIVE_BACK_TTL_MS) + """)
end
return 0
"""

MOVE_UP = """
-- KEYS[1]: the account's give-back epoch key; then the limiter keys of each waiter in turn.
-- ARGV[1]: the epoch last seen ('' none); ARGV[2]: the number of waiters; then per waiter:
-- its token, its key count k, then k window strings ("pmax n1 p1 n2 p2 ...").
-- Reply: {epoch} when it is the one seen (nothing given back since), else {epoch, then per
-- waiter its new delay in seconds from now when it moved up, else '' (not earlier, or gone)}.
local ep = redis.call('GET', KEYS[1]) or '0'
if ep == ARGV[1] then return {ep} end
local _t = redis.call('TIME')
local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000
local out = {ep}
local ki, ai = 2, 3
for _ = 1, tonumber(ARGV[2]) do
  local token = ARGV[ai]
  local nk = tonumber(ARGV[ai + 1])
  ai = ai + 2
  local olds = redis.call('ZSCORE', KEYS[ki], token)
  local res = ''
  if olds then
    local old = tonumber(olds)
    local t = now
    for i = 0, nk - 1 do
      local w = {}
      for x in string.gmatch(ARGV[ai + i], '%S+') do w[#w + 1] = tonumber(x) end
      for j = 2, #w, 2 do
        -- the n-th latest reservation strictly ahead of this one
        local r = redis.call('ZREVRANGEBYSCORE', KEYS[ki + i], '(' .. olds, '-inf',
                             'WITHSCORES', 'LIMIT', w[j] - 1, 1)
        if r[2] then
          local s = tonumber(r[2]) + w[j + 1]
          if s > t then t = s end
        end
      end
    end
    if t < old then
      for i = 0, nk - 1 do
        redis.call('ZADD', KEYS[ki + i], 'XX', t, token)
      end
      res = tostring(t - now)
    end
  end
  out[#out + 1] = res
  ki = ki + nk
  ai = ai + nk
end
return out
"""

__all__ = ["GIVE_BACK_TTL_MS", "MOVE_UP", "RELEASE"]
