--[[ flow_ack.lua: remove flow outbox entries that were carried over (README "Flows").

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  then pairs (1..1000): key, stamp as flow_take returned them
An entry goes only when its stamp is still the same: news of a child that were replaced by
  later news of that child (a retry, then an outcome) meanwhile stay to be carried over.
Returns: the number of entries removed.
]]
local SCRIPT = 'flow_ack'
--- @include "args"
--- @include "flows"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local n = #ARGV - 1
if n <= 0 then return redis.error_reply(argerr(2, 'key', 'is missing (give key, stamp pairs)')) end
if n % 2 ~= 0 then return redis.error_reply(SCRIPT .. ': ARGV after [1] must come in pairs (key, stamp), got ' .. n .. ' values') end
if n > 2000 then return redis.error_reply(SCRIPT .. ': at most 1000 entries per call, got ' .. (n / 2)) end
for i = 2, #ARGV, 2 do
  if ARGV[i] == '' then return redis.error_reply(argerr(i, 'key', 'is missing')) end
end
local removed = 0
for i = 2, #ARGV, 2 do
  local key = ARGV[i]
  local text = redis.call('HGET', KEYS[15], key)
  if text and flow_stamp(key, text) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[15], key)
    redis.call('ZREM', KEYS[16], key)
    removed = removed + 1
  elseif not text then
    redis.call('ZREM', KEYS[16], key)
  end
end
return removed
