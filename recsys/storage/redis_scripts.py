"""Lua scripts of the Redis feature storage: each runs atomically on the server, so an event batch or an
upsert is applied whole or not at all, and two replicas applying the same event id count it once."""

from __future__ import annotations

# Applies a batch of events atomically: checks the generation (returns -1 if stale so the client
# can retry against the new one), then per event skips an event id applied before (SET NX with a TTL,
# inside the generation so a reload forgets them with the data), creates the user, bumps float32
# counters in place, moves the item to the end of the history list and trims it to the cap.
# KEYS: current, last_update, then (user, history, item, applied) per event.
# ARGV: generation, user counter byte offset or -1, item counter byte offset or -1,
#       packed blank user, now, history cap, applied TTL, then (item id, has event id) per event.
RECORD_EVENTS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local uoff = tonumber(ARGV[2])
local ioff = tonumber(ARGV[3])
local cap = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local function bump(key, off)
  local b = redis.call('GETRANGE', key, off, off + 3)
  if #b == 4 then
    redis.call('SETRANGE', key, off, struct.pack('<f', struct.unpack('<f', b) + 1))
  end
end
local n = (#KEYS - 2) / 4
local applied = 0
for k = 0, n - 1 do
  local ukey, hkey, ikey, ekey = KEYS[3 + 4 * k], KEYS[4 + 4 * k], KEYS[5 + 4 * k], KEYS[6 + 4 * k]
  local item, has_id = ARGV[8 + 2 * k], ARGV[9 + 2 * k]
  if has_id == '0' or redis.call('SET', ekey, '1', 'NX', 'EX', ttl) then
    if redis.call('EXISTS', ukey) == 0 then redis.call('SET', ukey, ARGV[4]) end
    if uoff >= 0 then bump(ukey, uoff) end
    redis.call('LREM', hkey, 0, item)
    redis.call('RPUSH', hkey, item)
    redis.call('LTRIM', hkey, -cap, -1)
    if ioff >= 0 and redis.call('EXISTS', ikey) == 1 then bump(ikey, ioff) end
    applied = applied + 1
  end
end
if applied > 0 then redis.call('SET', KEYS[2], ARGV[5]) end
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
