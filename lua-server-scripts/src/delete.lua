--[[ delete.lua: delete (cancel) one job by id, from whichever structure holds it (seed 002's DELETE).

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  [2] id    job id
Pending job: removes the record and the job's entry (wait list / ready set (LBQUEUE, and QUEUE
  jobs with a priority) / due set / LBQUEUE entry or parked slot); a pending LBQUEUE job that holds its jobHash (waiting for a retry)
  releases it and queues the parked job; a DELQUEUE job frees its identity@timestamp entry.
Finished job: removes the record and its failed-set entry.
Executing job (a worker holds its lease): cancelled, not removed yet, because it still runs on
  its worker: the record gets the field cancelled = server time (decimal Unix seconds) and its
  lease score in jobrt:{Q}:active goes from E (Unix ms) to E + 0.5, once (the mark complete,
  release, renew and requeue_expired go by); it keeps its lease, its LBQUEUE jobHash claim and
  its DELQUEUE identity@timestamp entry, so no identical job starts while it runs. The message "cancel:<id>" goes to the wake channel, so the
  worker running it stops it. get answers nothing for it from now on, renew reports it lost,
  enqueue of its id is refused, and complete, release or requeue_expired (lease ran out)
  removes the record and frees its claims once it has stopped. Deleting it again while it
  stops answers 1 again (and publishes "cancel:<id>" again).
Flows (README "Flows"): a parent that is deleted (pending, waiting for its children, or
  finished) takes its children that are still pending with it: a d: entry for each goes to the
  outbox (carry them over with flow_take / flow_deliver / flow_ack), and its children hash
  goes; its running or finished children run on and their news is dropped. A child that is
  deleted (pending, or cancelled while executing) tells its parent it was deleted (u: entry):
  the parent no longer waits for it.
Returns: 1 when a job was deleted or cancelled (or is already cancelled and stopping), 0 when
  there was none.
Publishes: "cancel:<id>" on the wake channel (executing job); the wake channel (now, Unix ms)
  when a parked LBQUEUE job was queued; the record key on the results channel (pending job), so
  whoever waits for its result learns that it is gone.
]]
local SCRIPT = 'delete'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "lease"
--- @include "flows"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, jid
qtype, err = queue_type(); if err then return redis.error_reply(err) end
jid, err = name_arg(2, 'id', 256, true); if err then return redis.error_reply(err) end

local now_ms, now_s = now()
local prefix = KEYS[1]
local rec = prefix .. jid
local f = redis.call('HMGET', rec, 'state', 'worker', 'hash', 'pending-created', 'dedup', 'cancelled', 'attempts',
  'children', 'flow')
local state = f[1]
redis.call('ZREM', KEYS[6], jid)
if not state then return 0 end
local links, parents = flow_lookup({ jid })     -- a child or a parent of a flow (includes/flows.lua)
local member = lease_member(f[2] or '', f[7] or '0', jid)
local lease = state == 'executing' and redis.call('ZSCORE', KEYS[5], member)
if lease then
  -- it runs on a worker: cancel it, and let it hold its claims until it has stopped. The lease
  -- score E (ms) becomes E + 0.5: complete, release, renew and requeue_expired read the mark from
  -- the score they fetch anyway; the record field is for get and enqueue
  if not f[6] then
    redis.call('HSET', rec, 'cancelled', now_s)
  end
  local e = tonumber(lease)
  if e == math.floor(e) then
    redis.call('ZADD', KEYS[5], 'XX', string.format('%.1f', e + 0.5), member)
  end
  redis.call('PUBLISH', KEYS[13], 'cancel:' .. jid)
  flow_wake(flow_ended(jid, links[jid], parents[jid], 'deleted', '', 0, true, now_ms), now_ms)
  return 1
end
redis.call('DEL', rec)
local nflow = flow_ended(jid, links[jid], nil, 'deleted', '', 0, true, now_ms)
local waiting = f[8] and redis.call('ZSCORE', KEYS[17], jid)
if f[8] then nflow = nflow + flow_cascade(jid, f[9], now_ms) end
flow_wake(nflow, now_ms)
if state == 'finished' then return 1 end

local order = order_of(f[4])
if waiting then
  -- a parent waiting for its children is in no other structure
elseif qtype == 'QUEUE' then
  if redis.call('ZREM', KEYS[4], order .. '|' .. jid) + redis.call('ZREM', KEYS[3], order .. '|' .. jid) == 0 then
    redis.call('LREM', KEYS[2], 1, jid)
  end
elseif qtype == 'LBQUEUE' then
  redis.call('ZREM', KEYS[4], order .. '|' .. jid)
  redis.call('ZREM', KEYS[3], order .. '|' .. jid)
  if f[3] then
    if redis.call('HGET', KEYS[7], f[3]) == jid then redis.call('HDEL', KEYS[7], f[3]) end
    if redis.call('HGET', KEYS[9], f[3]) == jid then redis.call('HDEL', KEYS[9], f[3]) end
  end
else
  redis.call('ZREM', KEYS[4], order .. '|' .. jid)
end
if free_claims(qtype, jid, f[3], f[5]) then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
redis.call('PUBLISH', KEYS[14], rec)
return 1
