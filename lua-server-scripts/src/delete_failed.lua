--[[ delete_failed.lua: delete the jobs of the failed set (seed 003's deleteFailedJobs).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of failed jobs deleted per call (oldest first); '' = 1000
Returns: the number of failed-set entries removed (call again while it equals limit).
]]
local SCRIPT = 'delete_failed'
--- @include "args"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, limit
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end

local prefix = KEYS[1]
local ids = redis.call('ZRANGE', KEYS[6], 0, limit - 1)
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[6], unpack(ids))
local recs = {}
for i = 1, #ids do
  -- a failed id that was enqueued again is no longer failed: keep that record
  if redis.call('HGET', prefix .. ids[i], 'result') == 'failed' then recs[#recs + 1] = prefix .. ids[i] end
end
if #recs > 0 then redis.call('DEL', unpack(recs)) end
return #ids
