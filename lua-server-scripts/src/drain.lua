--[[ drain.lua: remove the waiting and delayed jobs of a queue (jobrt drain), keep the running
and failed ones.

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of jobs removed per call; '' = 1000
Removes, in this order, up to limit entries: the due set (delayed jobs, DELQUEUE jobs, retries
  in backoff), the ready set (LBQUEUE entries, QUEUE jobs with a priority), the wait list
  (oldest first) and the parked LBQUEUE jobs. Each one's record is deleted (unless it is
  executing: an id pushed twice by hand), with what it claimed: its DELQUEUE identity@timestamp
  entry, its LBQUEUE waiting entry, parked slot, and the jobHash it held while waiting for a
  retry (no parked job is queued for it: those are drained too). Executing jobs (their leases,
  claims and records), the failed set, finished records, counters, settings (paused, limits)
  and cron entries stay.
Flows (README "Flows"): a removed job that is the child of a flow tells its parent it was
  deleted (u: entry in the outbox; "flow:<ms>" on the wake channel); a removed parent's
  children hash goes. Parents waiting for their children (jobrt:{Q}:flow:waiting) are not
  drained: delete them by id (their pending children go with them).
Publishes: the record keys of the removed jobs on jobrt:{Q}:results, one per line, in one
  message (whoever waits for one of them learns that it is gone).
Returns: { removed, more } where more is 1 when waiting jobs are left (call again).
]]
local SCRIPT = 'drain'
--- @include "args"
--- @include "flows"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, limit
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end

local prefix = KEYS[1]
local ids = {}
local function id_of(member) return member:match('^%d+|(.*)$') or member end
for _, k in ipairs({ KEYS[4], KEYS[3] }) do
  local left = limit - #ids
  if left > 0 then
    local got = redis.call('ZRANGE', k, 0, left - 1)
    if #got > 0 then
      redis.call('ZREM', k, unpack(got))
      for i = 1, #got do ids[#ids + 1] = id_of(got[i]) end
    end
  end
end
local left = limit - #ids
if left > 0 then
  local got = redis.call('LRANGE', KEYS[2], -left, -1)
  if #got > 0 then
    redis.call('LTRIM', KEYS[2], 0, -(#got + 1))
    for i = #got, 1, -1 do ids[#ids + 1] = got[i] end
  end
end
left = limit - #ids
if left > 0 and redis.call('HLEN', KEYS[9]) > 0 then
  local flat = redis.call('HGETALL', KEYS[9])
  local fields = {}
  for i = 1, #flat, 2 do
    if #fields >= left then break end
    fields[#fields + 1] = flat[i]
    ids[#ids + 1] = flat[i + 1]
  end
  redis.call('HDEL', KEYS[9], unpack(fields))
end

local gone = {}
local now_ms = now()
local links, parents = flow_lookup(ids)         -- children and parents of flows (includes/flows.lua)
local nflow = 0
for _, jid in ipairs(ids) do
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'hash', 'dedup')
  if f[1] ~= 'executing' then
    if f[1] then
      redis.call('DEL', rec)
      gone[#gone + 1] = rec
      nflow = nflow + flow_ended(jid, links[jid], parents[jid], 'deleted', '', 0, true, now_ms)
    end
    if f[3] and redis.call('HGET', KEYS[10], f[3]) == jid then redis.call('HDEL', KEYS[10], f[3]) end
    if qtype == 'LBQUEUE' and f[2] then
      for _, k in ipairs({ KEYS[7], KEYS[8], KEYS[9] }) do
        if redis.call('HGET', k, f[2]) == jid then redis.call('HDEL', k, f[2]) end
      end
    end
  end
end
if #gone > 0 then redis.call('PUBLISH', KEYS[14], table.concat(gone, '\n')) end
flow_wake(nflow, now_ms)
local more = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[3]) + redis.call('LLEN', KEYS[2]) +
  redis.call('HLEN', KEYS[9])
return { #gone, more > 0 and 1 or 0 }
