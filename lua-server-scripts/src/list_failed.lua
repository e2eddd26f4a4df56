--[[ list_failed.lua: one page of the failed set, newest first, with the records.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] offset  whole number >= 0; '' = 0
  [3] count   whole number 1..1000; '' = 100
Returns: { total, records } where total is the size of the failed set and records is an array
  of flat field/value arrays (as get.lua); entries whose record expired are left out.
]]
local SCRIPT = 'list_failed'
--- @include "args"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, offset, count
qtype, err = queue_type(); if err then return redis.error_reply(err) end
offset, err = opt_num(2, 'offset', 0, 1e12, true, 0); if err then return redis.error_reply(err) end
count, err = opt_num(3, 'count', 1, 1000, true, 100); if err then return redis.error_reply(err) end

local ids = redis.call('ZREVRANGE', KEYS[6], offset, offset + count - 1)
local out = {}
for i = 1, #ids do
  local r = redis.call('HGETALL', KEYS[1] .. ids[i])
  if #r > 0 then out[#out + 1] = r end
end
return { redis.call('ZCARD', KEYS[6]), out }
