"""The Lua scripts: every change to a namespace is one of these, run atomically by Redis.

Each script gets the namespace's key prefix as ``ARGV[1]`` (``ps:{ns}:``: one hash slot for all
of them) and a request id as ``ARGV[2]``. A script that changes something keeps its answer under
its request id (Redisson's latch; in a ring per channel, ``ql:<channel>``): when redis-py sends
it again after a dropped connection, the second run answers what the first did and changes
nothing, so an ``append`` or a ``put`` is never applied twice. Time comes from ``TIME``, never
from a client's clock.

Keys (after the prefix):
  ``types`` id -> typeid; ``next`` the last id; ``names`` name -> id; ``named`` ids with a name;
  ``instance`` this namespace's incarnation; ``sessions`` zset sid -> expiry (ms); ``si:<sid>``
  who the session is; ``r:<id>`` sid -> references; ``sr:<sid>`` ids it refers to; ``sh:<sid>``
  ids where it held permits; ``f:<sid>`` queue items on their way to it; ``tk:<sid>`` queue id
  -> items it took, not yet done; ``sb:<sid>`` barriers it waited at; ``doomed`` zset id -> when
  to free it; ``t:<token>`` a waiter's wake-up list.
  Per object ``<id>:<x>``: ``d`` the value (blob, permits, flag), ``v`` its version, ``m``
  meta (kind, sizes), ``h`` holders (``sid|owner`` -> count) or a barrier's state, ``w``
  waiters (``sid|token``), ``p`` putters, ``q`` items, ``u`` unfinished tasks, ``j`` joiners,
  ``f`` the last fencing token, ``c`` the objects a container's value holds proxies of; a
  dict's entries ``e`` (field -> value) and their order ``o`` (field -> insertion number), a
  list's items ``l`` (``_items``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["LATCHED", "PLAIN", "SUFFIXES"]

#: every per-object key suffix (freeing an object deletes them all)
SUFFIXES: Final = ("d", "v", "m", "h", "w", "p", "q", "u", "j", "f", "c", "e", "o", "l", "W", "x")

_PRELUDE: Final = """
local P = ARGV[1]
local rid = ARGV[2]
local now_ms = nil
local function now()  -- (Redis's clock, in ms; read once, and only by a script that asks)
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_ms
end
local ALL = 1000000000
local function alive(sid)
  local s = redis.call('ZSCORE', P .. 'sessions', sid)
  return s and tonumber(s) > now()
end
local function sid_of(entry)
  return string.sub(entry, 1, string.find(entry, '|', 1, true) - 1)
end
-- push to up to n live waiters of list (skipping dead sessions); how many were woken
local function wake(list, n)
  local woken = 0
  while woken < n do
    local e = redis.call('LPOP', list)
    if not e then break end
    if alive(sid_of(e)) then
      local tk = P .. 't:' .. string.sub(e, string.find(e, '|', 1, true) + 1)
      redis.call('RPUSH', tk, '1')
      redis.call('PEXPIRE', tk, 60000)
      woken = woken + 1
    end
  end
  return woken
end
-- register a waiter once (a re-check keeps its place; one woken and beaten goes first)
local function enlist(list, entry, front)
  if redis.call('LPOS', list, entry) then return end
  if front == '1' then redis.call('LPUSH', list, entry) else redis.call('RPUSH', list, entry) end
end
-- permits given back because their holder's process ended: as many release() calls by others,
-- which the stdlib would accept (its lock stays held by the gone process), are accepted and
-- change nothing (a Lock: one)
local function orphan(meta, n)
  if redis.call('HGET', meta, 'kind') == 'Lock' then redis.call('HSET', meta, 'orphaned', 1)
  else redis.call('HINCRBY', meta, 'orphaned', n) end
end
local function exists(id)
  return redis.call('HEXISTS', P .. 'types', id) == 1
end
local function retain(id, sid)
  redis.call('HINCRBY', P .. 'r:' .. id, sid, 1)
  redis.call('SADD', P .. 'sr:' .. sid, id)
  redis.call('ZREM', P .. 'doomed', id)
end
local function unreferenced(id, delay)
  -- (a freed object, or a deleted namespace, is not made again by a late reference note)
  if redis.call('HLEN', P .. 'r:' .. id) == 0 and exists(id) then
    redis.call('ZADD', P .. 'doomed', now() + delay, id)
  end
end
"""

_FREE: Final = """
local SUFFIXES = {SUFFIX_LIST}
local function free(id, delay)
  local lock = redis.call('HGET', P .. id .. ':m', 'lock')
  if lock then  -- a Condition's lock: the condition's reference ends with it
    redis.call('HDEL', P .. 'r:' .. lock, 'o:' .. id)
    unreferenced(lock, delay)
  end
  for _, child in ipairs(redis.call('SMEMBERS', P .. id .. ':c')) do
    redis.call('HDEL', P .. 'r:' .. child, 'o:' .. id)  -- (the objects in its value)
    unreferenced(child, delay)
  end
  for _, s in ipairs(SUFFIXES) do redis.call('DEL', P .. id .. ':' .. s) end
  redis.call('DEL', P .. 'r:' .. id)
  redis.call('HDEL', P .. 'types', id)
end
""".replace("SUFFIX_LIST", ", ".join(f"'{s}'" for s in SUFFIXES))


#: the prelude of the one-entry changes: no clock, no waiters, no references (the lighter a
#: script, the sooner Redis answers: each helper defined is work on every run)
_LEAN: Final = """
local P = ARGV[1]
local rid = ARGV[2]
local function exists(id)
  return redis.call('HEXISTS', P .. 'types', id) == 1
end
"""


#: answers a channel keeps for a repeated send: a request is sent again before the sender's
#: next one, so this many senders (threads) of one process would have to wait at once for
#: a slot to be reused before its repetition came
LATCH_SLOTS: Final = 1024

# A request id is ``<channel>:<n>``. Its answer is kept in the channel's ring ``ql:<channel>``
# (field n mod LATCH_SLOTS: "<request id>\0<answer>"), so a process keeps at most that many,
# whatever its rate of changes (a key per request, kept a minute, would be 600,000 keys at
# 10,000 changes a second); the ring goes with the session (``reap``).
_LATCH_OPEN: Final = f"""
local latch, slot
if rid ~= '' then
  local channel, n = string.match(rid, '^(.-):(%d+)$')
  latch, slot = P .. 'ql:' .. channel, tonumber(n) % {LATCH_SLOTS}
  local done = redis.call('HGET', latch, slot)
  if done then
    local sep = string.find(done, '\\0', 1, true)
    if string.sub(done, 1, sep - 1) == rid then
      return cmsgpack.unpack(string.sub(done, sep + 1))
    end
  end
end
"""

_LATCH_CLOSE: Final = """
if rid ~= '' and KEEP(r) then
  redis.call('HSET', latch, slot, rid .. '\\0' .. cmsgpack.pack(r))
end
return r
"""

#: whether an answer is kept (nothing is made again in a deleted namespace): a script on an
#: object answers 'gone' there, and its check is enough; the others ask
_KEEP_ANY: Final = "(function(_) return redis.call('EXISTS', P .. 'instance') == 1 end)"
_KEEP_OBJECT: Final = "(function(a) return type(a) ~= 'table' or a[1] ~= 'gone' end)"


def _latched(body: str, prelude: str = _PRELUDE) -> str:
    """A changing script: its answer is kept under its request id, for a repeated send."""
    keep = _KEEP_OBJECT if _OBJECT.strip() in body else _KEEP_ANY
    return (
        prelude
        + _LATCH_OPEN
        + "local function body()\n"
        + body
        + "\nend\nlocal r = body()\n"
        + _LATCH_CLOSE.replace("KEEP", keep)
    )


_OBJECT: Final = """
  local id = ARGV[3]
  if not exists(id) then return {'gone'} end
  local base = P .. id .. ':'
"""

# -- sessions, references, objects ---------------------------------------------------------------

_BEAT: Final = """
local sid, ttl = ARGV[3], tonumber(ARGV[4])
if ARGV[6] == '' and redis.call('EXISTS', P .. 'instance') == 0 then
  return {'', 'gone'}  -- (the namespace was deleted: a heartbeat does not make it again)
end
local was = redis.call('ZSCORE', P .. 'sessions', sid)
redis.call('ZADD', P .. 'sessions', now() + ttl, sid)
if ARGV[5] ~= '' then
  redis.call('HSET', P .. 'si:' .. sid, 'who', ARGV[5], 'since', now(), 'latch', ARGV[7])
end
local instance = redis.call('GET', P .. 'instance')
if not instance and ARGV[6] ~= '' then  -- (a heartbeat never makes a namespace again)
  instance = ARGV[6]
  redis.call('SET', P .. 'instance', instance)
end
-- 'lapsed': the session had expired (its locks may have gone to others)
return {instance, (was and tonumber(was) <= now()) and 'lapsed' or 'ok'}
"""

_REAP_ONE: Final = """
local function reap(sid, delay)
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'sh:' .. sid)) do
    local h = P .. id .. ':h'
    local fields = redis.call('HGETALL', h)
    local back = 0
    local reentrant = redis.call('HGET', P .. id .. ':m', 'reentrant') == '1'
    for j = 1, #fields, 2 do
      if sid_of(fields[j]) == sid then
        back = back + (reentrant and 1 or tonumber(fields[j + 1]))
        redis.call('HDEL', h, fields[j])
      end
    end
    if back > 0 and exists(id) then  -- (a freed object is not made again)
      if not reentrant then orphan(P .. id .. ':m', back) end
      redis.call('INCRBY', P .. id .. ':d', back)
      wake(P .. id .. ':w', back)
    end
  end
  local f = redis.call('HGETALL', P .. 'f:' .. sid)
  local back = {}  -- queue id -> items given back (still to be done: not counted done)
  for j = #f - 1, 1, -2 do
    local qid = sid_of(f[j])
    if exists(qid) then
      redis.call('LPUSH', P .. qid .. ':q', f[j + 1])
      wake(P .. qid .. ':w', 1)
      back[qid] = (back[qid] or 0) + 1
    end
  end
  local tk = redis.call('HGETALL', P .. 'tk:' .. sid)
  for j = 1, #tk, 2 do
    local u = P .. tk[j] .. ':u'
    local done = tonumber(tk[j + 1]) - (back[tk[j]] or 0)
    if exists(tk[j]) and done > 0 then
      if redis.call('DECRBY', u, done) <= 0 then
        redis.call('SET', u, 0)
        wake(P .. tk[j] .. ':j', ALL)
      end
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'sb:' .. sid)) do
    -- a party waiting at a barrier, or running its action, died: the barrier breaks
    local b = P .. id .. ':'
    local waits = redis.call('HGET', b .. 'h', 'acting') == sid
    for _, e in ipairs(redis.call('LRANGE', b .. 'w', 0, -1)) do
      if sid_of(e) == sid then waits = true end
    end
    if waits and exists(id) then
      redis.call('HSET', b .. 'h', 'broken', 1, 'count', 0)
      redis.call('HDEL', b .. 'h', 'acting')
      wake(b .. 'w', ALL)
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'sw:' .. sid)) do
    local b = P .. id .. ':'  -- (its watches end with it; nobody left: no more stream)
    redis.call('HDEL', b .. 'W', sid)
    if redis.call('EXISTS', b .. 'W') == 0 then redis.call('DEL', b .. 'x') end
  end
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'sr:' .. sid)) do
    redis.call('HDEL', P .. 'r:' .. id, sid)
    unreferenced(id, delay)
  end
  local ring = redis.call('HGET', P .. 'si:' .. sid, 'latch')
  if ring then redis.call('DEL', P .. 'ql:' .. ring) end
  redis.call('DEL', P .. 'sh:' .. sid, P .. 'f:' .. sid, P .. 'tk:' .. sid, P .. 'sr:' .. sid,
    P .. 'si:' .. sid, P .. 'sb:' .. sid, P .. 'sw:' .. sid)
  redis.call('ZREM', P .. 'sessions', sid)
end
"""

# the janitor: dead sessions reaped, unreferenced objects freed, in bounded batches
_JANITOR: Final = (
    _FREE
    + _REAP_ONE
    + """
local delay = tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', P .. 'sessions', '-inf', now(), 'LIMIT', 0, 20)
for _, sid in ipairs(dead) do reap(sid, delay) end
local ids = redis.call('ZRANGEBYSCORE', P .. 'doomed', '-inf', now(), 'LIMIT', 0, 200)
local freed = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'doomed', id)
  if redis.call('HLEN', P .. 'r:' .. id) == 0 and redis.call('SISMEMBER', P .. 'named', id) == 0
  then free(id, delay); freed = freed + 1 end
end
return {#dead, freed}
"""
)

# a process leaving on purpose: what its session held is given back at once
_LEAVE: Final = _REAP_ONE + "reap(ARGV[3], tonumber(ARGV[4]))\nreturn 1\n"

_REFS: Final = """
  local sid, delay, n = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  for i = 6, 5 + n do if exists(ARGV[i]) then retain(ARGV[i], sid) end end
  for i = 6 + n, #ARGV do
    local id = ARGV[i]
    local r = P .. 'r:' .. id
    if redis.call('HINCRBY', r, sid, -1) <= 0 then
      redis.call('HDEL', r, sid)
      if redis.call('HLEN', r) == 0 then
        redis.call('SREM', P .. 'sr:' .. sid, id)
        if exists(id) then unreferenced(id, delay) end
      end
    end
  end
  return 1
"""

# ARGV: typeid, sid, name ('' none), #values, (suffix, value)..., #meta, (field, value)...
_CREATE: Final = """
  local typeid, sid, name = ARGV[3], ARGV[4], ARGV[5]
  if name ~= '' then
    local id = redis.call('HGET', P .. 'names', name)
    if id then
      local have = redis.call('HGET', P .. 'types', id)
      if have ~= typeid then return {'taken', have} end
      retain(id, sid)
      return {'ok', id}
    end
  end
  local id = tostring(redis.call('INCR', P .. 'next'))
  redis.call('HSET', P .. 'types', id, typeid)
  local i = 7
  for _ = 1, tonumber(ARGV[6]) do
    redis.call('SET', P .. id .. ':' .. ARGV[i], ARGV[i + 1]); i = i + 2
  end
  local m = tonumber(ARGV[i]); i = i + 1
  for _ = 1, m do redis.call('HSET', P .. id .. ':m', ARGV[i], ARGV[i + 1]); i = i + 2 end
  retain(id, sid)
  local lock = redis.call('HGET', P .. id .. ':m', 'lock')
  if lock then  -- a Condition holds a reference to its lock for as long as it lives
    redis.call('HINCRBY', P .. 'r:' .. lock, 'o:' .. id, 1)
    redis.call('ZREM', P .. 'doomed', lock)
  end
  if name ~= '' then
    redis.call('HSET', P .. 'names', name, id)
    redis.call('SADD', P .. 'named', id)
  end
  return {'ok', id}
"""

_UNNAME: Final = """
  local name, delay = ARGV[3], tonumber(ARGV[4])
  local id = redis.call('HGET', P .. 'names', name)
  if not id then return 0 end
  redis.call('HDEL', P .. 'names', name)
  redis.call('SREM', P .. 'named', id)
  unreferenced(id, delay)
  return 1
"""

# -- data: a serialized value with a version, changed by compare-and-set ---------------------------

_READ: Final = """
local id = ARGV[3]
if not exists(id) then return {'gone'} end
local v = redis.call('GET', P .. id .. ':v') or '0'
if v == ARGV[4] then return {'same', v} end
return {'new', v, redis.call('GET', P .. id .. ':d')}
"""

# A change of a container a process watches goes to the object's stream ``x`` (``XADD``, at
# most ~10,000 entries kept), from the same script that makes it, in the order made: fields
# ``v`` the version after it, ``e`` the change(s) as the client serialized them (``<n>:`` and
# a list of n (op, args, kwargs, result)), ``r`` a result in its stored form (a popped item).
# The client sends ``e`` as ARGV[4] (taken out here, so the script's own arguments keep their
# places); while somebody watches (``W``: sid -> watches) and it sent none, nothing changes
# and the answer is {'watched'}: the client sends the change again with its description.
_WATCHED: Final = (
    _OBJECT
    + """
  local ev = table.remove(ARGV, 4)
  -- (one call where nobody watches it and it holds no proxy, the usual case: each costs)
  local marked = redis.call('EXISTS', base .. 'W', base .. 'c') > 0
  local watched = marked and redis.call('EXISTS', base .. 'W') == 1
  local holds = marked and (not watched or redis.call('EXISTS', base .. 'c') == 1)
  if watched and ev == '' then return {'watched'} end
  local function bump(res)
    local n = ev ~= '' and tonumber(string.match(ev, '^(%d+):')) or 1
    local v = tostring(redis.call('INCRBY', base .. 'v', n))
    if watched then
      redis.call('XADD', base .. 'x', 'MAXLEN', '~', 10000, '*', 'v', v, 'e', ev, 'r', res or '')
    end
    return v
  end
"""
)

# the objects in a container's value (ARGV[first..last]): it holds a reference ('o:<id>') to
# each, as the stdlib's server keeps the objects a managed dict holds proxies of alive
_CHILDREN: Final = """
local function hold_children(id, base, delay, first, last)
  local c = base .. 'c'
  if last < first and redis.call('EXISTS', c) == 0 then return end
  local new = {}
  for i = first, last do new[ARGV[i]] = true end
  for _, child in ipairs(redis.call('SMEMBERS', c)) do
    if new[child] then
      new[child] = nil  -- (still there)
    else
      redis.call('SREM', c, child)
      redis.call('HDEL', P .. 'r:' .. child, 'o:' .. id)
      unreferenced(child, delay)
    end
  end
  for child in pairs(new) do
    if exists(child) then
      redis.call('SADD', c, child)
      redis.call('HSET', P .. 'r:' .. child, 'o:' .. id, 1)
      redis.call('ZREM', P .. 'doomed', child)
    end
  end
end
"""

# ARGV: id, version it was computed from, value, delay, the ids of the objects in the value
_WRITE: Final = (
    _CHILDREN
    + _WATCHED
    + """
  local v = redis.call('GET', base .. 'v') or '0'
  if v ~= ARGV[4] then return {'conflict', v, redis.call('GET', base .. 'd')} end
  redis.call('SET', base .. 'd', ARGV[5])
  hold_children(id, base, tonumber(ARGV[6]), 7, #ARGV)
  return {'ok', bump()}
"""
)

# -- dicts and lists item by item (``_items``): entries e + order o, or items l -----------------

# ARGV: id, known version ('' none), kind. The whole: {'new', v, order, entries} (a dict),
# {'new', v, items} (a list), or {'same', v} when it is still the known version
_READ_ITEMS: Final = """
local id = ARGV[3]
if not exists(id) then return {'gone'} end
local b = P .. id .. ':'
local v = redis.call('GET', b .. 'v') or '0'
if v == ARGV[4] then return {'same', v} end
if ARGV[5] == 'list' then return {'new', v, redis.call('LRANGE', b .. 'l', 0, -1)} end
return {'new', v, redis.call('ZRANGE', b .. 'o', 0, -1), redis.call('HGETALL', b .. 'e')}
"""

# ARGV: (id, kind)...: what a pipeline touches, read at once (under its WATCH): per object
# {'gone'} or {'new', version, watched (0/1), the stored form as read/read_items give it}
_READ_MANY: Final = """
local out = {}
for i = 3, #ARGV, 2 do
  local id, kind = ARGV[i], ARGV[i + 1]
  local b = P .. id .. ':'
  if not exists(id) then
    out[#out + 1] = {'gone'}
  else
    local v = redis.call('GET', b .. 'v') or '0'
    local w = redis.call('EXISTS', b .. 'W')
    if kind == 'list' then
      out[#out + 1] = {'new', v, w, redis.call('LRANGE', b .. 'l', 0, -1)}
    elseif kind == 'dict' then
      out[#out + 1] = {'new', v, w, redis.call('ZRANGE', b .. 'o', 0, -1),
        redis.call('HGETALL', b .. 'e')}
    else
      out[#out + 1] = {'new', v, w, redis.call('GET', b .. 'd')}
    end
  end
end
return out
"""

# ARGV: id, version it was computed from, delay, kind, #children, children..., then the
# whole: (field, value)... of a dict in order, or the items of a list
_REWRITE: Final = (
    _CHILDREN
    + _WATCHED
    + """
  local v = redis.call('GET', base .. 'v') or '0'
  if v ~= ARGV[4] then return {'conflict', v} end
  local nc = tonumber(ARGV[7])
  hold_children(id, base, tonumber(ARGV[5]), 8, 7 + nc)
  local first = 8 + nc
  if ARGV[6] == 'list' then
    redis.call('DEL', base .. 'l')
    for i = first, #ARGV, 1000 do
      redis.call('RPUSH', base .. 'l', unpack(ARGV, i, math.min(i + 999, #ARGV)))
    end
  else
    redis.call('DEL', base .. 'e', base .. 'o')
    local seq = 0
    for i = first, #ARGV, 2 do
      seq = seq + 1
      redis.call('HSET', base .. 'e', ARGV[i], ARGV[i + 1])
      redis.call('ZADD', base .. 'o', seq, ARGV[i])
    end
    redis.call('HSET', base .. 'm', 'seq', seq)
  end
  return {'ok', bump()}
"""
)

# what a change of one entry cannot do alone: a container holding proxies (their references
# are counted over the whole value) is changed whole
_ITEM_OBJECT: Final = (
    _WATCHED
    + """
  if holds then return {'whole'} end
  local function insert(e, o, field, value)
    if redis.call('HSET', e, field, value) == 1 then
      redis.call('ZADD', o, redis.call('HINCRBY', base .. 'm', 'seq', 1), field)
    end
  end
"""
)

# ARGV: id, (field, value)...: d[key] = value, update()
_DICT_SET: Final = (
    _ITEM_OBJECT
    + """
  local e, o = base .. 'e', base .. 'o'
  for i = 4, #ARGV, 2 do insert(e, o, ARGV[i], ARGV[i + 1]) end
  return {'ok', bump()}
"""
)

# ARGV: id, field: del d[key], d.pop(key[, default]); {'ok', v, old value} or {'missing'}
_DICT_POP: Final = (
    _ITEM_OBJECT
    + """
  local old = redis.call('HGET', base .. 'e', ARGV[4])
  if not old then return {'missing'} end
  redis.call('HDEL', base .. 'e', ARGV[4])
  redis.call('ZREM', base .. 'o', ARGV[4])
  return {'ok', bump(old), old}
"""
)

# ARGV: id, field, default: d.setdefault(key, default); {'ok', v, the value now}
_DICT_SETDEFAULT: Final = (
    _ITEM_OBJECT
    + """
  local old = redis.call('HGET', base .. 'e', ARGV[4])
  if old then return {'ok', redis.call('GET', base .. 'v') or '0', old} end
  insert(base .. 'e', base .. 'o', ARGV[4], ARGV[5])
  return {'ok', bump(ARGV[5]), ARGV[5]}
"""
)

# ARGV: id, field, by, default (decimal ints): d.increment(key, by, default) on an int entry
# in 64 bits; {'whole'} when the entry is something else or the sum leaves 64 bits
_DICT_INCREMENT: Final = (
    _ITEM_OBJECT
    + """
  local e, field = base .. 'e', ARGV[4]
  local old = redis.call('HGET', e, field)
  if old and not string.match(old, '^%-?%d+$') then return {'whole'} end
  if not old then insert(e, base .. 'o', field, ARGV[6]) end
  if not pcall(redis.call, 'HINCRBY', e, field, ARGV[5]) then
    if not old then redis.call('HDEL', e, field); redis.call('ZREM', base .. 'o', field) end
    return {'whole'}
  end
  local now = redis.call('HGET', e, field)
  return {'ok', bump(now), now}
"""
)

# ARGV: id, items...: append(), extend()
_LIST_PUSH: Final = (
    _ITEM_OBJECT
    + """
  for i = 4, #ARGV, 1000 do
    redis.call('RPUSH', base .. 'l', unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return {'ok', bump()}
"""
)

# ARGV: id, index, value: lst[index] = value; {'range'} past either end
_LIST_SET: Final = (
    _ITEM_OBJECT
    + """
  local n, i = redis.call('LLEN', base .. 'l'), tonumber(ARGV[4])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then return {'range'} end
  redis.call('LSET', base .. 'l', i, ARGV[5])
  return {'ok', bump()}
"""
)

# ARGV: id, 'r' (pop()) or 'l' (pop(0)); {'ok', v, item} or {'empty'}
_LIST_POP: Final = (
    _ITEM_OBJECT
    + """
  local item = redis.call(ARGV[4] == 'l' and 'LPOP' or 'RPOP', base .. 'l')
  if not item then return {'empty'} end
  return {'ok', bump(item), item}
"""
)

# a snapshot of a primitive: typeid, value, holders, #waiters, #items, unfinished, meta
_STATE: Final = """
local id = ARGV[3]
if not exists(id) then return {'gone'} end
local b = P .. id .. ':'
return {'ok', redis.call('GET', b .. 'd') or '', redis.call('HGETALL', b .. 'h'),
  redis.call('LLEN', b .. 'w'), redis.call('LLEN', b .. 'q'), redis.call('GET', b .. 'u') or '0',
  redis.call('HGETALL', b .. 'm')}
"""

# ARGV: how many objects at most. What ``stats()`` shows of each: id, typeid, meta, version,
# small d, holders, waiters, putters, joiners, #items, unfinished, #entries, #items of a
# list, #references, watches per session
_INSPECT: Final = """
local out = {}
local ids = redis.call('HKEYS', P .. 'types')
for i = 1, math.min(#ids, tonumber(ARGV[3])) do
  local id = ids[i]
  local b = P .. id .. ':'
  local d = ''
  if redis.call('STRLEN', b .. 'd') <= 20 then d = redis.call('GET', b .. 'd') or '' end
  out[#out + 1] = {id, redis.call('HGET', P .. 'types', id), redis.call('HGETALL', b .. 'm'),
    redis.call('GET', b .. 'v') or '0', d, redis.call('HGETALL', b .. 'h'),
    redis.call('LRANGE', b .. 'w', 0, 99), redis.call('LRANGE', b .. 'p', 0, 99),
    redis.call('LRANGE', b .. 'j', 0, 99), redis.call('LLEN', b .. 'q'),
    redis.call('GET', b .. 'u') or '0', redis.call('HLEN', b .. 'e'),
    redis.call('LLEN', b .. 'l'), redis.call('HLEN', P .. 'r:' .. id),
    redis.call('HVALS', b .. 'W')}
end
return {#ids, out}
"""

# ARGV: id, sid, +1 or -1: a watch of the object starts or ends. Starting: {'ok', version,
# the stream's last id}, taken at once (its changes are the stream's entries after that id)
_WATCH: Final = """
local id, sid, n = ARGV[3], ARGV[4], tonumber(ARGV[5])
if not exists(id) then return {'gone'} end
local b = P .. id .. ':'
if n > 0 then
  redis.call('HINCRBY', b .. 'W', sid, 1)
  redis.call('SADD', P .. 'sw:' .. sid, id)
  local last = redis.call('XREVRANGE', b .. 'x', '+', '-', 'COUNT', 1)
  return {'ok', redis.call('GET', b .. 'v') or '0', last[1] and last[1][1] or '0-0'}
end
if redis.call('HINCRBY', b .. 'W', sid, -1) <= 0 then redis.call('HDEL', b .. 'W', sid) end
if redis.call('EXISTS', b .. 'W') == 0 then redis.call('DEL', b .. 'x') end
return {'ok'}
"""

# -- locks and semaphores: permits in d, holders in h ----------------------------------------------

# ARGV: id, sid, owner, token ('' = do not wait), front, count (an RLock's restored depth)
_ACQUIRE: Final = (
    _OBJECT
    + """
  local sid, tok, n = ARGV[4], ARGV[6], tonumber(ARGV[8])
  local holder = sid .. '|' .. ARGV[5]
  local entry = sid .. '|' .. tok
  local reentrant = redis.call('HGET', base .. 'm', 'reentrant') == '1'
  if reentrant and redis.call('HEXISTS', base .. 'h', holder) == 1 then
    redis.call('HINCRBY', base .. 'h', holder, n)
    return {'ok', redis.call('GET', base .. 'f') or '0'}
  end
  local avail = tonumber(redis.call('GET', base .. 'd'))
  if avail <= 0 then
    local fields = redis.call('HGETALL', base .. 'h')
    for j = 1, #fields, 2 do
      if not alive(sid_of(fields[j])) then
        avail = avail + (reentrant and 1 or tonumber(fields[j + 1]))
        redis.call('HDEL', base .. 'h', fields[j])
        if not reentrant then orphan(base .. 'm', tonumber(fields[j + 1])) end
      end
    end
  end
  if avail > 0 then
    redis.call('SET', base .. 'd', avail - 1)
    redis.call('HINCRBY', base .. 'h', holder, reentrant and n or 1)
    redis.call('SADD', P .. 'sh:' .. sid, id)
    if tok ~= '' then redis.call('LREM', base .. 'w', 0, entry) end
    if avail > 1 then wake(base .. 'w', avail - 1) end
    return {'ok', tostring(redis.call('INCR', base .. 'f'))}
  end
  if tok ~= '' then enlist(base .. 'w', entry, ARGV[7]) end
  return {'wait'}
"""
)

# ARGV: id, sid, owner, thinks ('1': this caller believes it holds it); {'ok', the holder released
# ('<sid>|<owner>': another's, where a Lock or Semaphore is released by another than its taker)}
_RELEASE: Final = (
    _OBJECT
    + """
  local sid, thinks = ARGV[4], ARGV[6]
  local holder = sid .. '|' .. ARGV[5]
  local h = base .. 'h'
  local kind = redis.call('HGET', base .. 'm', 'kind')
  local c = redis.call('HGET', h, holder)
  if not c and thinks == '1' then return {'lost'} end
  if kind ~= 'RLock' then
    local orphaned = tonumber(redis.call('HGET', base .. 'm', 'orphaned') or '0')
    if not c and orphaned > 0 then  -- (the late release the stdlib would accept: see orphan)
      redis.call('HINCRBY', base .. 'm', 'orphaned', -1)
      return {'ok'}
    end
    if kind == 'Lock' and orphaned > 0 then redis.call('HDEL', base .. 'm', 'orphaned') end
  end
  if kind == 'RLock' then
    if not c then return {'err', 'RuntimeError', 'cannot release un-acquired lock'} end
    if tonumber(c) > 1 then redis.call('HINCRBY', h, holder, -1); return {'ok'} end
    redis.call('HDEL', h, holder)
  elseif kind == 'Lock' then
    if not c then
      local held = redis.call('HKEYS', h)
      if #held == 0 then return {'err', 'RuntimeError', 'release unlocked lock'} end
      holder = held[1]  -- released by another than its holder: allowed, as threading.Lock
    end
    redis.call('HDEL', h, holder)
  else
    local avail = tonumber(redis.call('GET', base .. 'd'))
    if kind == 'BoundedSemaphore' and avail >= tonumber(redis.call('HGET', base .. 'm', 'initial'))
    then return {'err', 'ValueError', 'Semaphore released too many times'} end
    if not c then
      local held = redis.call('HKEYS', h)
      holder = held[1]  -- a permit given back by another: it is no longer its taker's
    end
    if holder and redis.call('HINCRBY', h, holder, -1) <= 0 then redis.call('HDEL', h, holder) end
  end
  redis.call('INCR', base .. 'd')
  wake(base .. 'w', 1)
  return {'ok', holder or ''}
"""
)

# a waiter that gives up: off the list; a wake-up that raced with it is passed on (ARGV[6]=1)
# or reported. ARGV: id, list suffix, sid, token, pass on
_WITHDRAW: Final = """
local base = P .. ARGV[3] .. ':'
local list = base .. ARGV[4]
local removed = redis.call('LREM', list, 0, ARGV[5] .. '|' .. ARGV[6])
local tk = P .. 't:' .. ARGV[6]
local raced = redis.call('LLEN', tk) > 0
redis.call('DEL', tk)
if raced and ARGV[7] == '1' then wake(list, 1) end
return {raced and 1 or 0, removed}
"""

# -- Condition: waiters in its own w, over the lock named in its meta ------------------------------

# ARGV: id, generation, sid, token: a party that stops waiting (interrupted) leaves the
# barrier as it was, if it is still waiting there; {'left'} or {'gone'}/{'passed'}
_BARRIER_LEAVE: Final = (
    _OBJECT
    + """
  local h = base .. 'h'
  if (redis.call('HGET', h, 'gen') or '0') ~= ARGV[4] or redis.call('HGET', h, 'broken') == '1'
  then return {'passed'} end
  if redis.call('LREM', base .. 'w', 0, ARGV[5] .. '|' .. ARGV[6]) == 1 then
    redis.call('HINCRBY', h, 'count', -1)
  end
  redis.call('DEL', P .. 't:' .. ARGV[6])
  return {'left'}
"""
)

# ARGV: id, lock id, sid, owner, token
_COND_WAIT: Final = (
    _OBJECT
    + """
  local lb = P .. ARGV[4] .. ':'
  local holder = ARGV[5] .. '|' .. ARGV[6]
  local c = redis.call('HGET', lb .. 'h', holder)
  if not c then return {'err', 'RuntimeError', 'cannot wait on un-acquired lock'} end
  redis.call('HDEL', lb .. 'h', holder)
  redis.call('INCR', lb .. 'd')
  wake(lb .. 'w', 1)
  redis.call('RPUSH', base .. 'w', ARGV[5] .. '|' .. ARGV[7])
  return {'ok', c}
"""
)

# ARGV: id, lock id, sid, owner, how many (-1: all)
_COND_NOTIFY: Final = (
    _OBJECT
    + """
  local holder = ARGV[5] .. '|' .. ARGV[6]
  if redis.call('HEXISTS', P .. ARGV[4] .. ':h', holder) == 0 then
    return {'err', 'RuntimeError', 'cannot notify on un-acquired lock'}
  end
  local n = tonumber(ARGV[7])
  wake(base .. 'w', n < 0 and ALL or n)
  return {'ok'}
"""
)

# -- Event -----------------------------------------------------------------------------------------

# ARGV: id, description (``_WATCHED``)
_EVENT_SET: Final = (
    _WATCHED
    + """
  redis.call('SET', base .. 'd', '1')
  wake(base .. 'w', ALL)
  return {'ok', bump()}
"""
)

_EVENT_CLEAR: Final = _WATCHED + "  redis.call('SET', base .. 'd', '0')\n  return {'ok', bump()}\n"

# ARGV: id, sid, token, front
_EVENT_WAIT: Final = (
    _OBJECT
    + """
  if redis.call('GET', base .. 'd') == '1' then return {'ok'} end
  if ARGV[5] ~= '' then enlist(base .. 'w', ARGV[4] .. '|' .. ARGV[5], ARGV[6]) end
  return {'wait'}
"""
)

# -- Queue: items in q, getters in w, putters in p, unfinished tasks in u, joiners in j ------------

# ARGV: id, sid, token, front, item
_PUT: Final = (
    _OBJECT
    + """
  local entry = ARGV[4] .. '|' .. ARGV[5]
  local max = tonumber(redis.call('HGET', base .. 'm', 'maxsize'))
  if max > 0 and redis.call('LLEN', base .. 'q') >= max then
    if ARGV[5] ~= '' then enlist(base .. 'p', entry, ARGV[6]); return {'wait'} end
    return {'full'}
  end
  redis.call('RPUSH', base .. 'q', ARGV[7])
  redis.call('INCR', base .. 'u')
  if ARGV[5] ~= '' then redis.call('LREM', base .. 'p', 0, entry) end
  wake(base .. 'w', 1)
  return {'ok'}
"""
)

# ARGV: id, sid, token, front. The item taken stays in f:<sid> until the taker has it (a
# JoinableQueue's: until the taker's task_done for it); {'ok', item, tag, keep}
_GET: Final = (
    _OBJECT
    + """
  local sid = ARGV[4]
  local entry = sid .. '|' .. ARGV[5]
  local item = redis.call('LPOP', base .. 'q')
  if item then
    local tag = id .. '|' .. rid
    local keep = '0'
    if redis.call('HGET', base .. 'm', 'redeliver') == '1' then
      redis.call('HSET', P .. 'f:' .. sid, tag, item)
      -- a JoinableQueue's item stays there until its task_done: a consumer that dies
      -- before has it delivered again (a plain Queue's, until it arrives)
      if redis.call('HGET', P .. 'types', id) == 'JoinableQueue' then keep = '1' end
    end
    redis.call('HINCRBY', P .. 'tk:' .. sid, id, 1)
    if ARGV[5] ~= '' then redis.call('LREM', base .. 'w', 0, entry) end
    wake(base .. 'p', 1)
    if redis.call('LLEN', base .. 'q') > 0 then wake(base .. 'w', 1) end
    return {'ok', item, tag, keep}
  end
  if ARGV[5] ~= '' then enlist(base .. 'w', entry, ARGV[6]); return {'wait'} end
  return {'empty'}
"""
)

# one item fewer of queue ``id`` counted as taken by session ``sid`` (``tk:<sid>``: what its
# death marks done), as its task_done, or its giving back, says
_UNTAKEN: Final = """
  local function untaken(sid, id)
    local tk = P .. 'tk:' .. sid
    if tonumber(redis.call('HGET', tk, id) or '0') > 0 then
      if redis.call('HINCRBY', tk, id, -1) <= 0 then redis.call('HDEL', tk, id) end
    end
  end
"""

# ARGV: id, sid, tag, item: an item taken for an asyncio caller cancelled meanwhile goes back to
# the head, no longer on its way to this session nor taken by it (``_async``)
_GIVE_BACK: Final = (
    _OBJECT
    + _UNTAKEN
    + """
  redis.call('HDEL', P .. 'f:' .. ARGV[4], ARGV[5])
  redis.call('LPUSH', base .. 'q', ARGV[6])
  untaken(ARGV[4], id)
  wake(base .. 'w', 1)
  return {'ok'}
"""
)

# ARGV: id, sid, tag of the oldest item this session took and has not done ('' none)
_TASK_DONE: Final = (
    _OBJECT
    + _UNTAKEN
    + """
  if tonumber(redis.call('GET', base .. 'u') or '0') <= 0 then
    return {'err', 'ValueError', 'task_done() called too many times'}
  end
  local left = redis.call('DECR', base .. 'u')
  if ARGV[5] ~= '' then redis.call('HDEL', P .. 'f:' .. ARGV[4], ARGV[5]) end
  untaken(ARGV[4], id)
  if left == 0 then wake(base .. 'j', ALL) end
  return {'ok'}
"""
)

# ARGV: id, sid, token
_JOIN: Final = (
    _OBJECT
    + """
  if tonumber(redis.call('GET', base .. 'u') or '0') <= 0 then return {'ok'} end
  enlist(base .. 'j', ARGV[4] .. '|' .. ARGV[5], '0')
  return {'wait'}
"""
)

# -- Barrier: parties and timeout in m; count, gen, broken and rgen (a reset's gen) in h -----------

# ARGV: id, sid, token
_BARRIER_WAIT: Final = (
    _OBJECT
    + """
  local h = base .. 'h'
  if redis.call('HGET', h, 'broken') == '1' then return {'broken'} end
  local count = tonumber(redis.call('HGET', h, 'count') or '0')
  local gen = redis.call('HGET', h, 'gen') or '0'
  if count + 1 >= tonumber(redis.call('HGET', base .. 'm', 'parties')) then
    if redis.call('HGET', base .. 'm', 'action') == '1' then
      -- the last to arrive runs the action first, then passes the barrier (barrier_pass)
      redis.call('HSET', h, 'count', count + 1, 'acting', ARGV[4])
      redis.call('SADD', P .. 'sb:' .. ARGV[4], id)
      return {'last', count, gen}
    end
    redis.call('HSET', h, 'count', 0)
    redis.call('HINCRBY', h, 'gen', 1)
    wake(base .. 'w', ALL)
    return {'ok', count}
  end
  redis.call('HSET', h, 'count', count + 1)
  redis.call('RPUSH', base .. 'w', ARGV[4] .. '|' .. ARGV[5])
  redis.call('SADD', P .. 'sb:' .. ARGV[4], id)  -- (its death breaks the barrier: reap)
  return {'wait', count, gen}
"""
)

_BARRIER_FATE: Final = """
local function fate(h, gen)
  if (redis.call('HGET', h, 'gen') or '0') ~= gen then
    if redis.call('HGET', h, 'rgen') == gen then return {'broken'} end
    return {'passed'}
  end
  if redis.call('HGET', h, 'broken') == '1' then return {'broken'} end
  return {'wait'}
end
"""

# ARGV: id, generation waited on
_BARRIER_CHECK: Final = (
    _BARRIER_FATE
    + """
local id = ARGV[3]
if not exists(id) then return {'gone'} end
return fate(P .. id .. ':h', ARGV[4])
"""
)

# ARGV: id, generation ('' : abort whatever it waits on)
_BARRIER_BREAK: Final = (
    _BARRIER_FATE
    + _OBJECT
    + """
  local h = base .. 'h'
  if ARGV[4] ~= '' then
    local f = fate(h, ARGV[4])
    if f[1] ~= 'wait' then return f end
  end
  redis.call('HSET', h, 'broken', 1, 'count', 0)
  redis.call('HDEL', h, 'acting')
  wake(base .. 'w', ALL)
  return {'broken'}
"""
)

# ARGV: id, generation: its action ran; everybody passes
_BARRIER_PASS: Final = (
    _OBJECT
    + """
  local h = base .. 'h'
  if (redis.call('HGET', h, 'gen') or '0') ~= ARGV[4] or redis.call('HGET', h, 'broken') == '1'
  then return {'broken'} end
  redis.call('HSET', h, 'count', 0)
  redis.call('HDEL', h, 'acting')
  redis.call('HINCRBY', h, 'gen', 1)
  wake(base .. 'w', ALL)
  return {'ok'}
"""
)

_BARRIER_RESET: Final = (
    _OBJECT
    + """
  local h = base .. 'h'
  if tonumber(redis.call('HGET', h, 'count') or '0') > 0 then
    redis.call('HSET', h, 'rgen', redis.call('HGET', h, 'gen') or '0')
    redis.call('HINCRBY', h, 'gen', 1)
  end
  redis.call('HSET', h, 'broken', 0, 'count', 0)
  wake(base .. 'w', ALL)
  return {'ok'}
"""
)

#: scripts that change something: run once per request id
#: the one-entry changes of dicts and lists (``_items``): the lean prelude is all they use
_ONE_ENTRY: Final = {
    "dict_set": _DICT_SET,
    "dict_pop": _DICT_POP,
    "dict_setdefault": _DICT_SETDEFAULT,
    "dict_increment": _DICT_INCREMENT,
    "list_push": _LIST_PUSH,
    "list_set": _LIST_SET,
    "list_pop": _LIST_POP,
}

LATCHED: Final = {
    **{name: _latched(body, _LEAN) for name, body in _ONE_ENTRY.items()},
    **{
        name: _latched(body)
        for name, body in {
            "refs": _REFS,
            "create": _CREATE,
            "unname": _UNNAME,
            "write": _WRITE,
            "rewrite": _REWRITE,
            "acquire": _ACQUIRE,
            "release": _RELEASE,
            "cond_wait": _COND_WAIT,
            "cond_notify": _COND_NOTIFY,
            "event_set": _EVENT_SET,
            "event_clear": _EVENT_CLEAR,
            "put": _PUT,
            "get": _GET,
            "give_back": _GIVE_BACK,
            "task_done": _TASK_DONE,
            "barrier_wait": _BARRIER_WAIT,
            "barrier_break": _BARRIER_BREAK,
            "barrier_pass": _BARRIER_PASS,
            "barrier_reset": _BARRIER_RESET,
            "barrier_leave": _BARRIER_LEAVE,
        }.items()
    },
}

#: scripts that read, or whose repetition is harmless
PLAIN: Final = {
    name: _PRELUDE + body
    for name, body in {
        "beat": _BEAT,
        "janitor": _JANITOR,
        "leave": _LEAVE,
        "read": _READ,
        "read_items": _READ_ITEMS,
        "read_many": _READ_MANY,
        "state": _STATE,
        "withdraw": _WITHDRAW,
        "event_wait": _EVENT_WAIT,
        "join": _JOIN,
        "barrier_check": _BARRIER_CHECK,
        "inspect": _INSPECT,
        "watch": _WATCH,
    }.items()
}
