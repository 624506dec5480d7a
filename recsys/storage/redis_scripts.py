"""Lua scripts of the Redis feature storage: each runs atomically on the server, so an event batch or an
upsert is applied whole or not at all, and two replicas applying the same event id count it once."""

from __future__ import annotations

# Applies a batch of events atomically: checks the generation (returns -1 if stale so the client
# can retry against the new one), then per event skips an event id applied before (SET NX with a TTL,
# inside the generation so a reload forgets them with the data), creates the user, moves the item to
# the end of the history list (trimmed to the cap) and updates the packed float32 features in place,
# as recsys.storage.base.OnlineColumns documents.
# KEYS: current, last_update, then (user, history, item, applied) per event.
# ARGV: generation, packed blank user, now, history cap, applied TTL, JSON layout, then
#       (item id, has event id, type, timestamp) per event. The layout holds byte offsets (-1 = absent):
#       {"u": {"if_new", "last", "first"}, "i": {...}, "plus": {type: {"u": [..], "i": [..]}}}.
RECORD_EVENTS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cap = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local layout = cjson.decode(ARGV[6])
local function get(key, off)
  local b = redis.call('GETRANGE', key, off, off + 3)
  if #b == 4 then return struct.unpack('<f', b) end
  return nil
end
local function put(key, off, v) redis.call('SETRANGE', key, off, struct.pack('<f', v)) end
local function bump(key, off)
  local v = get(key, off)
  if v then put(key, off, v + 1) end
end
local function apply(key, side, plus, new_to_user, ts)
  for _, off in ipairs(plus) do bump(key, off) end
  if new_to_user and side.if_new >= 0 then bump(key, side.if_new) end
  if ts > 0 then
    if side.last >= 0 then
      local v = get(key, side.last)
      if v and v < ts then put(key, side.last, ts) end
    end
    if side.first >= 0 then
      local v = get(key, side.first)
      if v and v == 0 then put(key, side.first, ts) end
    end
  end
end
local n = (#KEYS - 2) / 4
local applied = 0
for k = 0, n - 1 do
  local ukey, hkey, ikey, ekey = KEYS[3 + 4 * k], KEYS[4 + 4 * k], KEYS[5 + 4 * k], KEYS[6 + 4 * k]
  local item, has_id = ARGV[7 + 4 * k], ARGV[8 + 4 * k]
  local etype, ts = ARGV[9 + 4 * k], tonumber(ARGV[10 + 4 * k])
  if has_id == '0' or redis.call('SET', ekey, '1', 'NX', 'EX', ttl) then
    if redis.call('EXISTS', ukey) == 0 then redis.call('SET', ukey, ARGV[2]) end
    local new_to_user = redis.call('LREM', hkey, 0, item) == 0
    redis.call('RPUSH', hkey, item)
    redis.call('LTRIM', hkey, -cap, -1)
    local plus = layout.plus[etype] or layout.plus['']
    apply(ukey, layout.u, plus.u, new_to_user, ts)
    if redis.call('EXISTS', ikey) == 1 then apply(ikey, layout.i, plus.i, new_to_user, ts) end
    applied = applied + 1
  end
end
if applied > 0 then redis.call('SET', KEYS[2], ARGV[3]) end
return applied
"""

# Upserts records keeping the packed values of existing ones and replacing their JSON payload.
# KEYS: current, last_update, then one record key per upsert. ARGV: generation, now, header size,
# then (packed new record, payload JSON, merge flag) per upsert; merge = 1 merges JSON objects (user
# attributes), 0 replaces the payload (item categories and title).
UPSERT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local hsize = tonumber(ARGV[3])
local n = #KEYS - 2
for k = 1, n do
  local key, packed, payload, merge = KEYS[2 + k], ARGV[1 + 3 * k], ARGV[2 + 3 * k], ARGV[3 + 3 * k]
  local old = redis.call('GET', key)
  if not old then
    redis.call('SET', key, packed)
  else
    local width = struct.unpack('<I4', string.sub(old, 1, hsize))
    local head = string.sub(old, 1, hsize + 4 * width)
    if merge == '1' then
      local merged = cjson.decode(string.sub(old, hsize + 4 * width + 1))
      for key2, value in pairs(cjson.decode(payload)) do merged[key2] = value end
      payload = cjson.encode(merged)
      if payload == '[]' or payload == '{}' then payload = '{}' end
    end
    redis.call('SET', key, head .. payload)
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return n
"""

# Erases users (Users/Forget): their packed record and history list in the current generation.
# KEYS: current, last_update, then (user, history) per user. ARGV: generation, now.
# Returns {records, history items}, or {-1, 0} if a load switched generations (the client retries).
FORGET_USERS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local records, items = 0, 0
for k = 3, #KEYS, 2 do
  items = items + redis.call('LLEN', KEYS[k + 1])
  records = records + redis.call('EXISTS', KEYS[k])
  redis.call('DEL', KEYS[k], KEYS[k + 1])
end
if records > 0 then redis.call('SET', KEYS[2], ARGV[2]) end
return {records, items}
"""
