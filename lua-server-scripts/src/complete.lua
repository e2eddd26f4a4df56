--[[ complete.lua: record the outcomes of a batch of jobs one worker finished, in one call.

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV:
  [1] type        QUEUE | LBQUEUE | DELQUEUE
  [2] worker      worker id that holds the jobs
  [3] ttl_ok      seconds a successful record is kept (0..315360000; 0: removed at once); '' = 3600
  [4] ttl_failed  seconds a failed record is kept (0..315360000; 0: removed at once, not listed
                  in the failed set); '' = 604800 (7 days)
  [5] backoff     seconds before the first retry (0..86400), doubled per failure, at most 1 hour
                  (or backoff itself if larger); '' = 1
  then one group of 6 per job (1..1000 groups):
  [6+6k] id
  [7+6k] attempt      the attempt the outcome belongs to (whole number >= 1)
  [8+6k] outcome      'ok' | 'failed'
  [9+6k] value        ok: the result as JSON text ('' = null; valid UTF-8, at most 512 MiB:
                      workers check their own, smaller limit first); failed: the error reason (text)
  [10+6k] exception   failed: traceback text ('' = none); ok: must be ''
  [11+6k] retries     whole number 0..1000 used when the record has no retries field ('' = 0)
A job counts only if its lease "<worker>|<attempt>|<id>" is still in jobrt:{Q}:active: the lease
  belongs to that attempt, so a late outcome of an earlier attempt (whose lease was lost and
  whose job runs again, maybe on the same worker) is refused. Refused ones are returned.
ok: state=finished, result=successful, result-value, finished-created; EXPIRE ttl_ok (an
  earlier attempt's error-reason, error-exception and due were removed by reserve); ttl_ok 0:
  the record is deleted instead (its key is still published).
failed: failures+1 (failures count handler errors only: a lost lease is not the job's fault
  and uses up no retry). failures <= retries: state=pending, error-reason, error-exception,
  due; into jobrt:{Q}:due at now + backoff * 2^(failures-1) (LBQUEUE keeps its jobHash running
  meanwhile). No retries left: state=finished, result=failed, error-reason, error-exception,
  finished-created; EXPIRE ttl_failed and into jobrt:{Q}:failed with its expiry time as score
  (ttl_failed 0: the record is deleted instead, and not listed).
An outcome ends the job's run of lost leases: stalls and suspect are removed (read records only).
Finished jobs: LBQUEUE releases the jobHash and queues its parked job; DELQUEUE frees the
  identity@timestamp entry.
Cancelled jobs (deleted while executing: delete made the lease score E + 0.5), whatever the
  outcome: the record is deleted, no result is stored, the same releases as a finished job;
  counted neither completed nor failed (stats counter total-cancelled) and returned in
  cancelled_ids. A job whose record vanished under its lease is handled the same way: the
  record is not recreated, and what still points at its id (an LBQUEUE jobHash it holds, a
  DELQUEUE identity entry) is found and freed.
Cost: a successful QUEUE job whose lease holds costs EXPIRE + HSET, and its record is not read;
  the record is read (HMGET) for a cancelled or failed job and for LBQUEUE/DELQUEUE jobs.
A reserve held back by max-active (stats field held) gets a wake-up when leases were dropped.
Flows (README "Flows"): a job that finished for good (or was cancelled) and is the child of a
  flow (link l:<id> in jobrt:{Q}:flow) gets its news for the parent in the outbox (u:<id>,
  carry it over with flow_take / flow_deliver / flow_ack; "flow:<ms>" on the wake channel); a
  parent's children hash expires with its record. One HMGET per call finds them.
One message on jobrt:{Q}:results with the record keys of the finished and cancelled jobs, one
  per line (a single job: exactly "jobrt:{Q}:job:<id>"; a cancelled job's record is gone).
Returns: { completed, retried, failed, ignored_ids, cancelled_ids, flow_entries }
  (flow_entries: outbox entries written, see Flows)
]]
local SCRIPT = 'complete'
--- @include "args"
--- @include "time"
--- @include "claims"
--- @include "lease"
--- @include "failed"
--- @include "flow"
--- @include "flows"
--- @include "json_text"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
local qtype, worker, ttl_ok, ttl_failed, backoff
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
ttl_ok, err = opt_num(3, 'ttl_ok', 0, 315360000, true, 3600); if err then return redis.error_reply(err) end
-- as text once: a number given to redis.call is formatted with sprintf on every call
local ttl_ok_s = string.format('%d', ttl_ok)
ttl_failed, err = opt_num(4, 'ttl_failed', 0, 315360000, true, 604800); if err then return redis.error_reply(err) end
backoff, err = opt_num(5, 'backoff', 0, 86400, false, 1); if err then return redis.error_reply(err) end
local n = #ARGV - 5
if n <= 0 then return redis.error_reply(argerr(6, 'id', 'is missing (give at least one job: id, attempt, outcome, value, exception, retries)')) end
if n % 6 ~= 0 then return redis.error_reply(SCRIPT .. ': ARGV after [5] must come in groups of 6 (id, attempt, outcome, value, exception, retries), got ' .. n .. ' values') end
if n > 6000 then return redis.error_reply(SCRIPT .. ': at most 1000 jobs per call, got ' .. (n / 6)) end
local outs = {}
for b = 6, #ARGV, 6 do
  -- the usual job (a plain id, attempt digits, 'ok' with JSON null or {}, no exception, no
  -- retries) is checked with a few comparisons; anything else takes the full checks, which
  -- name the argument
  local id, attempt, outcome, value, exception, retries = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  if id == '' or #id > 256 or id:find('[%c{}]') then
    local _
    _, err = name_arg(b, 'id', 256, true); return redis.error_reply(err)
  end
  if #attempt > 15 or not attempt:find('^[1-9]%d*$') then
    local _
    _, err = req_num(b + 1, 'attempt', 1, 1e15, true)
    if err then return redis.error_reply(err) end
  end
  if outcome == 'ok' then
    if value == '' then value = 'null' end
    if value ~= 'null' and value ~= '{}' then
      err = json_text_error(b + 3, 'value', value, 536870912); if err then return redis.error_reply(err) end
      if not pcall(cjson.decode, value) then
        return redis.error_reply(argerr(b + 3, 'value', 'must be JSON text, got ' .. shown(value)))
      end
    end
    if exception ~= '' then return redis.error_reply(argerr(b + 4, 'exception', "must be '' for outcome 'ok', got " .. shown(exception))) end
  elseif outcome ~= 'failed' then
    return redis.error_reply(argerr(b + 2, 'outcome', "must be 'ok' or 'failed', got " .. shown(outcome)))
  end
  if retries == '' then
    retries = 0
  else
    retries, err = opt_num(b + 5, 'retries', 0, 1000, true, 0); if err then return redis.error_reply(err) end
  end
  outs[#outs + 1] = { id = id, outcome = outcome, value = value, exception = exception, retries = retries,
                      member = worker .. '|' .. attempt .. '|' .. id }     -- lease_member (includes/lease.lua)
end

local now_ms, now_s = now()
local prefix = KEYS[1]
local members = {}
for i = 1, #outs do members[i] = outs[i].member end
local held = redis.call('ZMSCORE', KEYS[5], unpack(members))
local drop, ignored = {}, {}
local wake_at = nil
for i = 1, #outs do
  if held[i] then drop[#drop + 1] = members[i] else ignored[#ignored + 1] = outs[i].id end
end
if #drop > 0 then redis.call('ZREM', KEYS[5], unpack(drop)) end
if #drop > 0 and flow_freed() then wake_at = now_ms end     -- max-active: a held reserve may go
local fids = {}
for i = 1, #outs do if held[i] then fids[#fids + 1] = outs[i].id end end
local links, parents = flow_lookup(fids)                      -- jobs of flows (includes/flows.lua)
local nflow = 0

local done, retried, failed = 0, 0, 0
local finished, dues, fails, cancelled = {}, {}, {}, {}
local function wake(t) if not wake_at or t < wake_at then wake_at = t end end
local seen, NONE = {}, {}
for i = 1, #outs do
  local o = outs[i]
  if held[i] and not seen[o.member] then
    seen[o.member] = true
    local rec = prefix .. o.id
    local final = true
    -- E + 0.5: delete cancelled it while it ran (a lease score is whole ms otherwise)
    local cancel = held[i]:find('.', 1, true) ~= nil
    -- the record is read only when needed: a plain QUEUE success needs none of its fields
    local f = NONE
    if cancel or qtype ~= 'QUEUE' or o.outcome ~= 'ok' then
      f = redis.call('HMGET', rec, 'failures', 'retries', 'hash', 'dedup', 'pending-created', 'stalls', 'suspect')
    end
    -- a record that vanished under its lease (deleted by hand, evicted) is not recreated: for a
    -- success EXPIRE first (it answers 0 for a missing key, and HSET keeps the TTL it sets)
    local removed = false                      -- ttl_ok 0: the record goes at once
    if not cancel then
      if o.outcome == 'ok' and ttl_ok == 0 then
        cancel = redis.call('DEL', rec) == 0
        removed = not cancel
      elseif o.outcome == 'ok' then
        cancel = redis.call('EXPIRE', rec, ttl_ok_s) == 0
      else
        cancel = not f[5] and redis.call('EXISTS', rec) == 0
      end
    end
    if cancel then
      -- deleted while it ran (or its record vanished): it has stopped, nothing to record
      final = false
      if redis.call('DEL', rec) == 0 then
        if free_vanished(qtype, o.id) then wake(now_ms) end
      elseif free_claims(qtype, o.id, f[3], f[4]) then
        wake(now_ms)
      end
      cancelled[#cancelled + 1] = o.id
      finished[#finished + 1] = rec
      nflow = nflow + flow_ended(o.id, links[o.id], parents[o.id], 'deleted', '', 0, true, now_ms)
    else
      if (f[6] or f[7]) and not removed then redis.call('HDEL', rec, 'stalls', 'suspect') end
      if o.outcome == 'ok' then
        -- error-reason, error-exception and due of earlier attempts were removed by reserve
        if not removed then
          redis.call('HSET', rec, 'state', 'finished', 'result', 'successful', 'result-value', o.value,
            'finished-created', now_s)
        end
        done = done + 1
      else
        local failures = (tonumber(f[1]) or 0) + 1
        local retries = tonumber(f[2]) or o.retries
        if failures <= retries then
          final = false
          local wait = math.max(math.min(backoff * 2 ^ (failures - 1), 3600), backoff)
          local due_ms = now_ms + math.floor(wait * 1000 + 0.5)
          redis.call('HSET', rec, 'state', 'pending', 'failures', failures, 'error-reason', o.value,
            'error-exception', o.exception, 'due', string.format('%.3f', due_ms / 1000))
          dues[#dues + 1] = due_ms
          dues[#dues + 1] = order_of(f[5]) .. '|' .. o.id
          wake(due_ms)
          retried = retried + 1
        else
          redis.call('HSET', rec, 'state', 'finished', 'result', 'failed', 'failures', failures,
            'error-reason', o.value, 'error-exception', o.exception, 'finished-created', now_s)
          keep_failed(rec, o.id, ttl_failed, now_ms, fails)
          failed = failed + 1
        end
      end
    end
    if final then
      finished[#finished + 1] = rec
      if links[o.id] or parents[o.id] then
        local gone = removed or (o.outcome ~= 'ok' and ttl_failed == 0)
        nflow = nflow + flow_ended(o.id, links[o.id], parents[o.id], o.outcome, o.value,
          o.outcome == 'ok' and ttl_ok or ttl_failed, gone, now_ms)
      end
      if free_claims(qtype, o.id, f[3], f[4]) then wake(now_ms) end
    end
  end
end
if #dues > 0 then redis.call('ZADD', KEYS[4], unpack(dues)) end
if failed > 0 then flush_failed(fails, now_ms) end
if done > 0 then redis.call('HINCRBY', KEYS[11], 'total-completed', done) end
if retried > 0 then redis.call('HINCRBY', KEYS[11], 'total-retried', retried) end
if failed > 0 then redis.call('HINCRBY', KEYS[11], 'total-failed', failed) end
if #cancelled > 0 then redis.call('HINCRBY', KEYS[11], 'total-cancelled', #cancelled) end
if #finished > 0 then redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n')) end
if wake_at then redis.call('PUBLISH', KEYS[13], ms(wake_at)) end
flow_wake(nflow, now_ms)
return { done, retried, failed, ignored, cancelled, nflow }
