--[[ list_failed.lua: one page of the failed set, newest first (by when the record expires, which
is when it failed plus ttl_failed), with the records.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] offset  whole number >= 0; '' = 0
  [3] count   whole number 1..1000; '' = 100
Returns: { total, records } where total is the number of failed jobs whose record has not
  expired and records is an array of flat field/value arrays (as get.lua, with id and queue); entries whose
  record expired are neither counted nor shown.
]]
local SCRIPT = 'list_failed'
--- @include "args"
--- @include "time"
--- @include "record"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, offset, count
qtype, err = queue_type(); if err then return redis.error_reply(err) end
offset, err = opt_num(2, 'offset', 0, 1e12, true, 0); if err then return redis.error_reply(err) end
count, err = opt_num(3, 'count', 1, 1000, true, 100); if err then return redis.error_reply(err) end

-- entries whose record has expired (score: expiry, Unix ms) are not shown or counted
local now_ms = now()
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[6], '+inf', '(' .. ms(now_ms), 'LIMIT', offset, count)
local out = {}
for i = 1, #ids do
  local r = redis.call('HGETALL', KEYS[1] .. ids[i])
  if #r > 0 then out[#out + 1] = with_key_fields(r, ids[i], qname) end
end
return { redis.call('ZCOUNT', KEYS[6], '(' .. ms(now_ms), '+inf'), out }
