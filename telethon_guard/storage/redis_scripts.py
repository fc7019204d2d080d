"""Lua scripts of the Redis guard storage: one script per decision, one round trip each.

Every script reads the time from the Redis server (``redis.call('TIME')``), so processes on hosts
with skewed clocks agree, and returns **relative** seconds as strings (Redis turns Lua numbers
into integers, strings keep the fraction). Absolute times (server seconds since the epoch, as
doubles: microsecond resolution) only live inside Redis. Every key written gets an expiry.

The scripts mirror :class:`~telethon_guard.storage.memory.MemoryStorage` step by step; the
shared unit tests in ``tests/redis/test_redis_semantics.py`` run against both.
"""

from __future__ import annotations

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000
"""

_RESERVE_INTO = """
-- Reserve over KEYS[first .. #KEYS] (one sorted set per limiter key: member = token, score =
-- slot time); the window string of KEYS[i] is ARGV[warg + i - first]: "pmax n1 p1 n2 p2 ..."
-- (its longest period, then each window's count and period in seconds). Sets t, the slot.
-- Trimming is lazy (as MemoryStorage's log): a slot at or before now - longest period can
-- never delay a reservation (s + p <= now for every window), so stale slots are cut only once
-- a set holds more than 2 * (its largest count) + 64 of them: a set stays bounded, and most
-- reservations save the ZREMRANGEBYSCORE.
local t = now
local pmaxs, counts = {}, {}
for i = first, #KEYS do
  local k = KEYS[i]
  local w = {}
  for x in string.gmatch(ARGV[warg + i - first], '%S+') do w[#w + 1] = tonumber(x) end
  pmaxs[i] = w[1]
  local count = redis.call('ZCARD', k)
  local nmax = 0
  for j = 2, #w, 2 do
    if w[j] > nmax then nmax = w[j] end
  end
  if count > 2 * nmax + 64 then
    count = count - redis.call('ZREMRANGEBYSCORE', k, '-inf', now - w[1])
  end
  counts[i] = count
  for j = 2, #w, 2 do
    local n = w[j]
    if count >= n then
      -- the n-th latest slot: the window (n, p) has room again p seconds after it
      local r = redis.call('ZRANGE', k, -n, -n, 'WITHSCORES')
      local s = tonumber(r[2]) + w[j + 1]
      if s > t then t = s end
    end
  end
end
local slot = t
if observe then slot = now end
for i = first, #KEYS do
  local k = KEYS[i]
  redis.call('ZADD', k, slot, token)
  -- the key matters until its latest slot is older than its longest period: the expiry is
  -- (this slot + longest period + 1 s), never shortened (GT) below the one an earlier, later
  -- slot set; a new key (count 0: ZADD just created it, no expiry yet) gets it plainly
  local ms = math.ceil((slot - now + pmaxs[i]) * 1000) + 1000
  if counts[i] > 0 then
    redis.call('PEXPIRE', k, ms, 'GT')
  else
    redis.call('PEXPIRE', k, ms)
  end
end
"""

RESERVE = _NOW + """
-- KEYS: the limiter keys. ARGV: token, observe ('1'/'0'), then one window string per key.
local token = ARGV[1]
local observe = ARGV[2] == '1'
local first, warg = 1, 3
""" + _RESERVE_INTO + """
return tostring(t - now)
"""

RELEASE = """
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 0
"""

SEED = _NOW + """
-- KEYS[1]: a limiter key. ARGV: longest period, token base, then ages (seconds ago).
local pmax = tonumber(ARGV[1])
for i = 3, #ARGV do
  local t = now - tonumber(ARGV[i])
  if t > now - pmax then
    redis.call('ZADD', KEYS[1], t, ARGV[2] .. (i - 2))
  end
end
local r = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if r[2] then
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(r[2]) - now + pmax) * 1000) + 1000)
end
return 0
"""

FLOOD_BLOCK = _NOW + """
-- KEYS[1]: the scope's string key holding the absolute end of the block. ARGV[1]: seconds.
local untl = now + tonumber(ARGV[1])
local old = redis.call('GET', KEYS[1])
if old then
  old = tonumber(old)
  if old > untl then untl = old end
end
local ms = math.ceil((untl - now) * 1000)
if ms > 0 then
  redis.call('SET', KEYS[1], string.format('%.17g', untl), 'PX', ms)
else
  redis.call('DEL', KEYS[1])
end
return tostring(untl - now)
"""

FLOOD_LEFT = """
local v = redis.call('GET', KEYS[1])
if not v then return '0' end
""" + _NOW + """
local left = tonumber(v) - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return '0'
end
return tostring(left)
"""

# Breaker: one hash per key, fields s (state), f (consecutive failures), ou (open until),
# of (open for, seconds), pu (probe lease until). A missing key is CLOSED with 0 failures.
# Replies: {decision, state, old, retry_after, failures} as strings.
_BREAKER_LOAD = """
local h = redis.call('HMGET', KEYS[1], 's', 'f', 'ou', 'of', 'pu')
local state = h[1] or 'CLOSED'
local f = tonumber(h[2] or '0')
local ou = tonumber(h[3] or '0')
local of = tonumber(h[4] or '0')
local pu = tonumber(h[5] or '0')
local function keep(now, ttl)
  -- kept at least ttl seconds after the last write, and until the OPEN period ends
  local left = ou - now
  if left < 0 then left = 0 end
  redis.call('PEXPIRE', KEYS[1], math.ceil((left + ttl) * 1000))
end
"""

BREAKER_ACQUIRE = _BREAKER_LOAD + """
-- ARGV: lease (seconds), ttl (seconds)
if state == 'CLOSED' then
  return {'allow', 'CLOSED', 'CLOSED', '0', tostring(f)}
end
""" + _NOW + """
local lease = tonumber(ARGV[1])
if state == 'OPEN' then
  if now < ou then
    return {'reject', 'OPEN', 'OPEN', tostring(ou - now), tostring(f)}
  end
  redis.call('HSET', KEYS[1], 's', 'HALF_OPEN', 'pu', string.format('%.17g', now + lease))
  keep(now, math.max(lease, tonumber(ARGV[2])))
  return {'probe', 'HALF_OPEN', 'OPEN', '0', tostring(f)}
end
if pu > now then
  return {'reject', 'HALF_OPEN', 'HALF_OPEN', tostring(pu - now), tostring(f)}
end
redis.call('HSET', KEYS[1], 'pu', string.format('%.17g', now + lease))
keep(now, math.max(lease, tonumber(ARGV[2])))
return {'probe', 'HALF_OPEN', 'HALF_OPEN', '0', tostring(f)}
"""

BREAKER_FAILURE = _BREAKER_LOAD + _NOW + """
-- ARGV: threshold, open_seconds, growth, max_open, ttl
local threshold = tonumber(ARGV[1])
local open_seconds = tonumber(ARGV[2])
local growth = tonumber(ARGV[3])
local max_open = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
f = f + 1
if state == 'OPEN' then
  redis.call('HSET', KEYS[1], 'f', f)
  keep(now, ttl)
  local left = ou - now
  if left < 0 then left = 0 end
  return {'', 'OPEN', 'OPEN', tostring(left), tostring(f)}
end
if state == 'HALF_OPEN' then
  of = math.min(max_open, math.max(open_seconds, of) * growth)
elseif f >= threshold then
  of = open_seconds
else
  redis.call('HSET', KEYS[1], 's', 'CLOSED', 'f', f)
  keep(now, ttl)
  return {'', 'CLOSED', 'CLOSED', '0', tostring(f)}
end
ou = now + of
redis.call('HSET', KEYS[1], 's', 'OPEN', 'f', f, 'ou', string.format('%.17g', ou),
           'of', string.format('%.17g', of), 'pu', '0')
keep(now, ttl)
return {'', 'OPEN', state, tostring(of), tostring(f)}
"""

BREAKER_SUCCESS = _BREAKER_LOAD + """
if state == 'OPEN' then
""" + _NOW + """
  -- an answer to a call started before the breaker opened: keep OPEN, the probe decides
  local left = ou - now
  if left < 0 then left = 0 end
  return {'', 'OPEN', 'OPEN', tostring(left), tostring(f)}
end
-- CLOSED or HALF_OPEN -> CLOSED with no failures: exactly the state of a missing key
if h[1] then redis.call('DEL', KEYS[1]) end
return {'', 'CLOSED', state, '0', '0'}
"""

BREAKER_RELEASE_PROBE = """
if redis.call('HGET', KEYS[1], 's') == 'HALF_OPEN' then
  redis.call('HSET', KEYS[1], 'pu', '0')
end
return 0
"""

BREAKER_RECONNECTED = _BREAKER_LOAD + """
-- ARGV: ttl. The DC's connection is back: OPEN -> HALF_OPEN with no probe out (the next call is
-- the probe; f and of kept, so a failed probe re-opens with its backoff); else no change.
if state ~= 'OPEN' then
  return {'', state, state, '0', tostring(f)}
end
""" + _NOW + """
redis.call('HSET', KEYS[1], 's', 'HALF_OPEN', 'pu', '0')
keep(now, tonumber(ARGV[1]))
return {'', 'HALF_OPEN', 'OPEN', '0', tostring(f)}
"""

BREAKER_STATE = _BREAKER_LOAD + """
if state == 'CLOSED' then
  return {'', state, state, '0', tostring(f)}
end
""" + _NOW + """
-- OPEN: open time left; HALF_OPEN: probe lease left (0: the next call is the probe)
local left = ou - now
if state == 'HALF_OPEN' then left = pu - now end
if left < 0 then left = 0 end
return {'', state, state, tostring(left), tostring(f)}
"""

ADMIT = _NOW + """
-- One call's admission in one round trip: breaker acquire, flood-ledger check, limiter
-- reservation (each exactly as BREAKER_ACQUIRE, FLOOD_LEFT and RESERVE; later steps are
-- skipped once one refuses). KEYS[1]: the breaker; KEYS[2 .. 1+nf]: flood scopes; the rest:
-- limiter keys. ARGV: lease, ttl, nf, token, then one window string per limiter key.
-- Fast path: when neither the breaker nor any scope has a key (CLOSED without failures,
-- nothing blocked: one EXISTS), the reply is just the delay as a string ('' when nothing was
-- reserved). Otherwise: {decision, state, old, retry_after, failures, flood left, flood index
-- (1-based, 0: none), delay ('' when nothing was reserved)}.
local nf = tonumber(ARGV[3])
local d = false
if redis.call('EXISTS', unpack(KEYS, 1, 1 + nf)) > 0 then
""" + _BREAKER_LOAD + """
  local lease = tonumber(ARGV[1])
  d = {'allow', state, state, '0', tostring(f)}
  if state == 'OPEN' then
    if now < ou then
      d = {'reject', 'OPEN', 'OPEN', tostring(ou - now), tostring(f)}
    else
      redis.call('HSET', KEYS[1], 's', 'HALF_OPEN', 'pu', string.format('%.17g', now + lease))
      keep(now, math.max(lease, tonumber(ARGV[2])))
      d = {'probe', 'HALF_OPEN', 'OPEN', '0', tostring(f)}
    end
  elseif state == 'HALF_OPEN' then
    if pu > now then
      d = {'reject', 'HALF_OPEN', 'HALF_OPEN', tostring(pu - now), tostring(f)}
    else
      redis.call('HSET', KEYS[1], 'pu', string.format('%.17g', now + lease))
      keep(now, math.max(lease, tonumber(ARGV[2])))
      d = {'probe', 'HALF_OPEN', 'HALF_OPEN', '0', tostring(f)}
    end
  end
  d[6] = '0'
  d[7] = '0'
  d[8] = ''
  if d[1] == 'reject' then return d end
  local worst = 0
  for i = 1, nf do
    local v = redis.call('GET', KEYS[1 + i])
    if v then
      local left = tonumber(v) - now
      if left > worst then
        worst = left
        d[7] = tostring(i)
      end
    end
  end
  if worst > 0 then
    d[6] = tostring(worst)
    return d
  end
end
local first, warg = 2 + nf, 5
local delay = ''
if first <= #KEYS then
  local token = ARGV[4]
  local observe = false
""" + _RESERVE_INTO + """
  delay = tostring(t - now)
end
if d then
  d[8] = delay
  return d
end
return delay
"""

__all__ = [
    "ADMIT",
    "BREAKER_ACQUIRE",
    "BREAKER_FAILURE",
    "BREAKER_RECONNECTED",
    "BREAKER_RELEASE_PROBE",
    "BREAKER_STATE",
    "BREAKER_SUCCESS",
    "FLOOD_BLOCK",
    "FLOOD_LEFT",
    "RELEASE",
    "RESERVE",
    "SEED",
]
