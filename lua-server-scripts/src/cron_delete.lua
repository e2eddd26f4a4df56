--[[ cron_delete.lua: delete a cron entry of a queue (jobrt cron delete; workers remove the file
entries no job file declares any more).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] name    the entry's name
  [3] source  '' any entry | 'cli' | 'file': only an entry of that source is deleted
Removes the stats fields cron:<name> and cron-last:<name>: no tick of it is enqueued any more
  (enqueue refuses a tick of an entry without cron-last). Jobs it already enqueued stay.
Publishes: "cron" on the wake channel when it deleted something.
Returns: 1 deleted, 0 no such entry (or one of the other source)
]]
local SCRIPT = 'cron_delete'
--- @include "args"
--- @include "cron"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, name
qtype, err = queue_type(); if err then return redis.error_reply(err) end
name, err = cron_name(2); if err then return redis.error_reply(err) end
if not name then return redis.error_reply(argerr(2, 'cron name', 'is missing')) end
local source = ARGV[3] or ''
if source ~= '' and source ~= 'cli' and source ~= 'file' then
  return redis.error_reply(argerr(3, 'source', "must be '', 'cli' or 'file', got " .. shown(source)))
end

local old = redis.call('HGET', KEYS[11], 'cron:' .. name)
if not old then return 0 end
if source ~= '' then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and o.source ~= source then return 0 end
end
redis.call('HDEL', KEYS[11], 'cron:' .. name, 'cron-last:' .. name)
redis.call('PUBLISH', KEYS[13], 'cron')
return 1
