"""Adaptive paces shared on Redis: the record, its publication, and its read at admission.

A pace learned from a FLOOD_WAIT (:mod:`telethon_guard.pacing`) is the account's, not the
process's: the process that learned it publishes its state (:meth:`AdaptivePacer.export`) as
one string ``"<version> <json>"`` at ``<prefix>:pc:{acct:<a>}/pace:<method>`` (the account's
hash tag: the same cluster slot as its limiter keys), expiring when the pace and its probation
are over. Every other process reads it with the admission it already makes:
:func:`admit_paced` wraps the admission script (:data:`~.redis_scripts.ADMIT`, unchanged)
so that the pace key is one more key and the version this process last saw one more
argument; while the version is the one seen (the common case) the reply is the admission's
own, else the record comes as one more element (``""`` when there is none). Still ONE round
trip per admitted call.
"""

from __future__ import annotations

PUBLISH = """
-- KEYS[1]: the pace key; ARGV[1]: "<version> <json>"; ARGV[2]: milliseconds it matters.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
"""


def admit_paced(admit: str) -> str:
    """The admission script ``admit`` (keys and arguments as documented there) taking one
    more key, the pace key, LAST, and one more argument, the pace version seen ('' none),
    LAST. While the record's version is the one seen the reply is ``admit``'s own; else it
    is ``admit``'s full 8-element reply (its fast path's delay expanded) plus the record as
    a 9th element (``''``: none)."""
    return """
local KEYS_ALL, ARGV_ALL = KEYS, ARGV
local pace_key = KEYS_ALL[#KEYS_ALL]
local pace_seen = ARGV_ALL[#ARGV_ALL]
local KEYS = {unpack(KEYS_ALL, 1, #KEYS_ALL - 1)}
local ARGV = {unpack(ARGV_ALL, 1, #ARGV_ALL - 1)}
local function admit()
""" + admit + """
end
local reply = admit()
local v = redis.call('GET', pace_key) or ''
local version = v
local sp = string.find(v, ' ', 1, true)
if sp then version = string.sub(v, 1, sp - 1) end
if version == pace_seen then return reply end
if type(reply) ~= 'table' then
  -- the admission's fast path (a delay alone): its full form, CLOSED without failures
  reply = {'allow', 'CLOSED', 'CLOSED', '0', '0', '0', '0', reply}
end
reply[9] = v
return reply
"""


__all__ = ["PUBLISH", "admit_paced"]
