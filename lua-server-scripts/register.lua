--[[ register.lua: the worker registry (seed 004's worker hash): which workers are alive, and what
each one says about itself. Every worker calls it at start and on every heartbeat; readers list
only the workers whose heartbeat has not expired, so a killed worker disappears by itself and
nothing grows with every worker that ever ran.

KEYS:
  [1] jobrt:{workers}        zset: worker id -> when its registration expires (Unix ms)
  [2] beat, stop: jobrt:{workers}:<id>, the worker's hash; list: the prefix jobrt:{workers}:
      (both keys carry the hash tag {workers}: one Cluster slot, so this script touches one)
ARGV:
  [1] op       'beat' | 'stop' | 'list'
  beat: [2] ttl seconds (1..86400) the registration lives without another beat, then field,
        value pairs (1..64 of them) written into the worker's hash (HSET), which expires with it
  stop: nothing more
  list: nothing more
beat: HSET + PEXPIRE of the worker's hash, ZADD of its expiry; expired ids are removed from
  KEYS[1] (their hashes have expired by themselves). stop: DEL the hash, ZREM the id.
Returns: beat: the number of workers alive; stop: 1 if the worker was registered, else 0;
  list: { {field, value, ...}, ... } the hashes of the workers alive, by id (a hash that
  vanished is left out).
]]
-- Built by tools/scripts.lua from src/register.lua and includes/: edit those, then run make.
local SCRIPT = 'register'
-- ---- includes/show.lua (edit it there, then run make) ----
-- a value quoted for an error message, at most 40 bytes of it, control characters as \<code>
-- (an error reply cannot carry a newline)
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. (v:gsub('%c', function(c) return '\\' .. c:byte() end)) .. "'"
end
-- ---- end of includes/show.lua ----
-- ---- includes/time.lua (edit it there, then run make) ----
-- Server time, and the enqueue order of a job.
-- now() -> milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  -- string padding, not string.format: sprintf costs Redis' Lua more than the rest of this
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. ('00000' .. t[2]):sub(-6), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- ---- end of includes/time.lua ----
if #KEYS ~= 2 or KEYS[1] ~= 'jobrt:{workers}' or KEYS[2]:sub(1, 16) ~= 'jobrt:{workers}:' then
  return redis.error_reply(SCRIPT .. ": expected KEYS 'jobrt:{workers}' and 'jobrt:{workers}:<id>' (or the prefix 'jobrt:{workers}:' to list)")
end
local op = ARGV[1]
local now_ms = now()
if op == 'list' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
  local out = {}
  for i = 1, #ids do
    local rec = redis.call('HGETALL', KEYS[2] .. ids[i])
    if #rec > 0 then out[#out + 1] = rec end
  end
  return out
end
local id = KEYS[2]:sub(17)
if id == '' or #id > 128 or id:find('[%c{}|]') then
  return redis.error_reply(SCRIPT .. ': the worker id (after jobrt:{workers}:) must be 1-128 bytes without control characters, braces or |, got ' .. shown(id))
end
if op == 'stop' then
  redis.call('DEL', KEYS[2])
  return redis.call('ZREM', KEYS[1], id)
end
if op ~= 'beat' then
  return redis.error_reply(SCRIPT .. ": ARGV[1] op must be 'beat', 'stop' or 'list', got " .. shown(op))
end
local ttl = tonumber(ARGV[2])
if not ttl or ttl < 1 or ttl > 86400 then
  return redis.error_reply(SCRIPT .. ': ARGV[2] ttl must be seconds from 1 to 86400, got ' .. shown(ARGV[2]))
end
local n = #ARGV - 2
if n < 2 or n % 2 ~= 0 or n > 128 then
  return redis.error_reply(SCRIPT .. ': ARGV after [2] must be 1 to 64 field, value pairs, got ' .. n .. ' values')
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], math.floor(ttl * 1000))
redis.call('ZADD', KEYS[1], now_ms + math.floor(ttl * 1000), id)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZCARD', KEYS[1])
