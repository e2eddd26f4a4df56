--[[ reserve.lua: lease up to N ready jobs to one worker (seed 002's RESERVE), in one call.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type        QUEUE | LBQUEUE | DELQUEUE
  [2] worker      worker id, 1..128 bytes, no '|'
  [3] count       whole number 1..1000: how many jobs at most
  [4] lease       seconds (0.001..86400) the jobs are held without a renew
  [5] ttl_failed  seconds a record failed here is kept (0..315360000; 0: removed at once); '' or
                  absent = 604800
  [6] alone       '1' when the worker runs nothing at the moment, so it may be given a job that
                  must run alone in its process; '' or '0' otherwise
Order: due entries of jobrt:{Q}:due first (DELQUEUE jobs whose time has come, retries whose
  backoff has passed, delayed QUEUE jobs), earliest first and first in, first out among equal
  due times; then QUEUE: jobs with a priority above 0 from the ready set (highest first), the
  wait list (priority 0, oldest first), jobs with a priority below 0; LBQUEUE: highest
  priority of the ready set; first in, first out among equal priorities. A due QUEUE job that
  has a priority first joins the ready set (its place by priority).
Flow control (README "Flow control", settings in jobrt:{Q}:stats): a paused queue hands out
  nothing; max-active caps the leases held at once (jobrt:{Q}:active) across all workers; a
  rate limit (rate-max per rate-per seconds) hands out one job per call at most and moves the
  next allowed start (rate-tat) on by rate-per / rate-max seconds per job. The reply's held
  and retry_at say why fewer jobs came than asked for and when to ask again.
Each job: record state=executing, executing-created, worker, attempts+1 (the attempt: it only
  grows, and the lease belongs to it); due, error-reason and error-exception (of an earlier
  attempt, or the wait for its due time) removed for a job that ran before or came from the
  due set; lease member "<worker>|<attempt>|<id>" in jobrt:{Q}:active with score =
  lease expiry (Unix ms); LBQUEUE: its jobHash is marked running (jobrt:{Q}:lb:running), so
  identical jobs wait in jobrt:{Q}:lb:parked. Each lease also gets a fencing token: the stats
  counter total-reserved after this lease was counted, so tokens only grow across every job
  and attempt of the queue (a jobHash's later holder always has a larger token).
Jobs that must run alone: a job taken back from a worker that stopped renewing its lease (record
  field suspect) is handed out only as the first job to a worker that runs nothing (ARGV[6]
  alone), and then as its only job, so that when such a job crashes its worker again, nothing
  else is hit and the loss is its own (see requeue_expired: poison jobs). A worker that is busy
  meets it as the end of this call: the job and those after it stay where they were, and the
  reply says `blocked` (start nothing new once these jobs are running: finish them, then
  reserve with alone).
Hand-written entries (an id pushed by hand, seed 004) that cannot run are not handed out:
  no record (or a record already executing): dropped, counted in the stats counter
  total-dropped; a record without a function field: finished as failed right here (result
  failed, error-reason "record has no 'function' field: set HSET jobrt:{Q}:job:<id> function
  <job name>", into jobrt:{Q}:failed, EXPIRE ttl_failed, counted in total-failed, its record
  key published on jobrt:{Q}:results), so it shows in the failed list.
Publishes: the wake channel (now, Unix ms) only when such a failed LBQUEUE job held its jobHash
  and a parked job was queued.
Returns: { now, next_due, next_lease, jobs, blocked, held, retry_at, more }
  now         server time, Unix ms
  next_due    earliest score left in jobrt:{Q}:due (Unix ms), or nil: arm a timer for it
  next_lease  earliest lease expiry in jobrt:{Q}:active (Unix ms), or nil: run requeue_expired then
  jobs        array of { id, function, args, attempt, retries, timeout, jobHash, fence, alone }
              (attempt counts from 1; retries/timeout/jobHash nil when not set on the job;
              fence the fencing token; alone 1 when the worker must run this job by itself)
  blocked     1 when a job that must run alone is next and this worker may not take it now (not
              alone, or it took other jobs first), else 0
  held        nil, or why no more jobs may start now: 'paused' (reserve again on a wake-up:
              resume publishes one), 'max-active' (on a wake-up: the next lease to end
              publishes one), 'rate' (at retry_at)
  retry_at    with held 'rate': the Unix ms from which the rate limit allows the next start
  more        1 when this call took as many candidates as it asked for (the queue may hold more
              ready jobs: reserve again when there are free slots), else 0: the queue had no
              more ready jobs, and a later enqueue that makes one ready publishes a wake-up
]]
-- Built by tools/scripts.lua from src/reserve.lua and includes/: edit those, then run make.
local SCRIPT = 'reserve'
-- ---- includes/args.lua (edit it there, then run make) ----
-- Argument checks. Each returns the value, or nil and a message naming the script and argument;
-- '' (or a missing ARGV) stands for an argument not given.
-- ---- includes/keys.lua (edit it there, then run make) ----
-- The 14 standard KEYS of one queue, in order (README "Keys"): KEYS[1] is the prefix of the job
-- records, KEYS[13] and KEYS[14] are channel names. check_keys([extra]) -> queue name | nil,
-- message; extra: the suffixes of the keys (or channels) a script takes after the 14, e.g.
-- { 'progress' } for jobrt:{Q}:progress.
-- ---- includes/show.lua (edit it there, then run make) ----
-- a value quoted for an error message, at most 40 bytes of it, control characters as \<code>
-- (an error reply cannot carry a newline)
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. (v:gsub('%c', function(c) return '\\' .. c:byte() end)) .. "'"
end
-- ---- end of includes/show.lua ----
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
-- "<script>: ARGV[i] <name> <msg>"
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
-- The queue name is 1-128 bytes of A-Z a-z 0-9 _ . : - (README "Names"): no '{' or '}', so no
-- queue's key can be another queue's, and the Cluster hash tag is exactly the queue name.
local function check_keys(extra)
  local more = extra and #extra or 0
  if #KEYS ~= 14 + more then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue' ..
      (more > 0 and (' and ' .. more .. ' more (jobrt:{QUEUE}:' .. table.concat(extra, ', jobrt:{QUEUE}:') .. ')') or '') ..
      ' (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix, qname = KEYS[1]:match('^(jobrt:{([^{}]*)}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  if qname == '' or #qname > 128 or qname:find('[^%w_.:%-]') then
    return nil, SCRIPT .. ': the queue name must be 1-128 characters of A-Z a-z 0-9 _ . : -, got ' .. shown(qname)
  end
  for i = 2, 14 + more do
    local want = prefix .. (SUFFIX[i] or extra[i - 14])
    if KEYS[i] ~= want then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(want) .. ', got ' .. shown(KEYS[i])
    end
  end
  return qname
end
-- ---- end of includes/keys.lua ----
-- ARGV[1]: the queue type, as the caller read it from RESERVED:QCONFIG
local function queue_type()
  local v = ARGV[1]
  if v == nil or v == '' then return nil, argerr(1, 'type', 'is missing (read it from RESERVED:QCONFIG)') end
  if v ~= 'QUEUE' and v ~= 'LBQUEUE' and v ~= 'DELQUEUE' then
    return nil, argerr(1, 'type', 'must be QUEUE, LBQUEUE or DELQUEUE, got ' .. shown(v))
  end
  return v
end
local function max_argv(n)
  if #ARGV > n then return SCRIPT .. ': expected at most ' .. n .. ' ARGV, got ' .. #ARGV end
end
-- optional string of at most maxlen bytes ('' or absent -> nil)
local function opt_str(i, name, maxlen)
  local v = ARGV[i]
  if v == nil or v == '' then return nil end
  if #v > maxlen then return nil, argerr(i, name, 'must be at most ' .. maxlen .. ' bytes, got ' .. #v) end
  return v
end
local function req_str(i, name, maxlen)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_str(i, name, maxlen)
end
-- optional decimal number within [lo, hi] ('' or absent -> dflt)
local function opt_num(i, name, lo, hi, whole, dflt)
  local v = ARGV[i]
  if v == nil or v == '' then return dflt end
  local n = (not v:find('[^%d%.eE+-]')) and tonumber(v) or nil
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return nil, argerr(i, name, 'must be a number, got ' .. shown(v))
  end
  if whole and n ~= math.floor(n) then return nil, argerr(i, name, 'must be a whole number, got ' .. shown(v)) end
  if n < lo or n > hi then
    return nil, argerr(i, name, 'must be between ' .. lo .. ' and ' .. hi .. ', got ' .. shown(v))
  end
  return n
end
local function req_num(i, name, lo, hi, whole)
  local v = ARGV[i]
  if v == nil or v == '' then return nil, argerr(i, name, 'is missing') end
  return opt_num(i, name, lo, hi, whole)
end
-- a worker id: 1..128 bytes without '|'
local function worker_id(i)
  local w, err = req_str(i, 'worker', 128)
  if w and w:find('|', 1, true) then return nil, argerr(i, 'worker', "must not contain '|', got " .. shown(w)) end
  return w, err
end
-- ---- end of includes/args.lua ----
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
-- The enqueue order of a job: its pending-created time ('1763841706.123456') as 16 digits of
-- microseconds, so that entries with equal scores sort first in, first out ('0000000000000000'
-- for a hand-written record without one).
local function order_of(created)
  local s, us = tostring(created):match('^(%d+)%.(%d%d%d%d%d%d)$')
  if not s then return '0000000000000000' end
  if #s <= 10 then return ('000000000' .. s):sub(-10) .. us end
  return string.format('%010d', tonumber(s)) .. us
end
-- ---- end of includes/time.lua ----
-- ---- includes/claims.lua (edit it there, then run make) ----
-- Claims a job holds while it is reserved: its LBQUEUE jobHash (KEYS[8]) and its DELQUEUE
-- identity@timestamp entry (KEYS[10]).
-- LBQUEUE: job jid stops holding jobHash h (when it holds it) and the job parked behind h is
-- queued. Returns true when a parked job was queued (the caller publishes a wake-up).
local function lb_release(h, jid)
  if redis.call('HGET', KEYS[8], h) ~= jid then return false end
  redis.call('HDEL', KEYS[8], h)
  local p = redis.call('HGET', KEYS[9], h)
  if not p then return false end
  redis.call('HDEL', KEYS[9], h)
  local pf = redis.call('HMGET', KEYS[1] .. p, 'pending-created', 'priority')
  redis.call('HSET', KEYS[7], h, p)
  redis.call('ZADD', KEYS[3], -(tonumber(pf[2]) or 1), order_of(pf[1]) .. '|' .. p)
  return true
end
-- job jid stopped for good: it frees its LBQUEUE jobHash h and its DELQUEUE identity@timestamp
-- entry dedup (either may be false). Returns true when a parked job was queued.
local function free_claims(qtype, jid, h, dedup)
  if dedup and redis.call('HGET', KEYS[10], dedup) == jid then redis.call('HDEL', KEYS[10], dedup) end
  if qtype == 'LBQUEUE' and h then return lb_release(h, jid) end
  return false
end
-- ---- end of includes/claims.lua ----
-- ---- includes/lease.lua (edit it there, then run make) ----
-- Leases. A lease belongs to one attempt of one job of one queue: it is the member
-- "<worker>|<attempt>|<id>" of KEYS[5] (score: expiry in Unix ms; + 0.5 marks a job deleted
-- while it runs), so a renewal, completion or release for any other attempt finds nothing.
-- ---- includes/priority.lua (edit it there, then run make) ----
-- QUEUE priorities (README "Queue types"). A QUEUE job enqueued with a priority other than 0
-- waits in the ready set KEYS[3] (score -priority, member "<order>|<id>"), the others in the wait
-- list KEYS[2], which counts as priority 0: highest priority first, first in, first out among
-- equal priorities.

-- Appends up to n ready QUEUE candidates to cands, in the order they are served: priorities
-- above 0 (ready-set scores below 0), then the wait list (oldest first), then priorities below 0.
-- Candidates: { id, 'ready', member, score } or { id, 'wait' }; what is taken is removed.
local function queue_candidates(cands, n)
  local pri = redis.call('ZRANGE', KEYS[3], 0, n - 1, 'WITHSCORES')
  local taken = {}
  local i = 1
  while i < #pri and #taken < n and tonumber(pri[i + 1]) < 0 do
    cands[#cands + 1] = { pri[i]:match('^%d+|(.*)$') or pri[i], 'ready', pri[i], pri[i + 1] }
    taken[#taken + 1] = pri[i]
    i = i + 2
  end
  local left = n - #taken
  if left > 0 then
    local got = redis.call('RPOP', KEYS[2], left)
    if got then
      for j = 1, #got do cands[#cands + 1] = { got[j], 'wait' } end
      left = left - #got
    end
  end
  while left > 0 and i < #pri do
    cands[#cands + 1] = { pri[i]:match('^%d+|(.*)$') or pri[i], 'ready', pri[i], pri[i + 1] }
    taken[#taken + 1] = pri[i]
    left = left - 1
    i = i + 2
  end
  if #taken > 0 then redis.call('ZREM', KEYS[3], unpack(taken)) end
end
-- Due QUEUE jobs (delayed jobs, retries in backoff) whose time has come and that carry a
-- priority join the ready set, so that they are served by priority like the waiting jobs (due
-- jobs without one are served first, as in every type). due: the flat member, score list of
-- the due entries whose time has come; returns the same list without those that moved.
local function promote_due(due)
  local keep = {}
  for i = 1, #due, 2 do
    local jid = due[i]:match('^%d+|(.*)$') or due[i]
    local p = tonumber(redis.call('HGET', KEYS[1] .. jid, 'priority'))
    if p and p ~= 0 then
      redis.call('ZREM', KEYS[4], due[i])
      redis.call('ZADD', KEYS[3], -p, due[i])
    else
      keep[#keep + 1] = due[i]
      keep[#keep + 1] = due[i + 1]
    end
  end
  return keep
end
-- ---- end of includes/priority.lua ----
-- ---- end of includes/lease.lua ----
-- ---- includes/failed.lua (edit it there, then run make) ----
-- Jobs that ended for good. A finished record is kept for a number of seconds (0: removed at
-- once, BullMQ's removeOnComplete / removeOnFail). The failed set KEYS[6] scores each id with
-- the time its record expires (Unix ms), so entries whose record is gone are exactly those
-- below now: readers count and list only the others, writers drop them.
-- keep_failed(rec, jid, ttl, now_ms, fails): expire (or remove) a failed record; collects its
-- failed-set entry in fails.
local function keep_failed(rec, jid, ttl, now_ms, fails)
  if ttl == 0 then
    redis.call('DEL', rec)
    return
  end
  redis.call('EXPIRE', rec, ttl)
  fails[#fails + 1] = now_ms + ttl * 1000
  fails[#fails + 1] = jid
end
-- Writes the collected failed-set entries and drops those whose record has expired.
local function flush_failed(fails, now_ms)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms)
  if #fails > 0 then redis.call('ZADD', KEYS[6], unpack(fails)) end
end
-- ---- end of includes/failed.lua ----
-- ---- includes/flow.lua (edit it there, then run make) ----
-- Flow control of a queue (README "Flow control"). Its settings are fields of the stats hash
-- KEYS[11]: paused (server time it was paused, decimal seconds), rate-max and rate-per (at most
-- rate-max jobs start per rate-per seconds: GCRA without a burst, one start every
-- rate-per / rate-max seconds, so no window of rate-per seconds ever sees more than rate-max
-- starts; rate-tat is its state: the Unix ms from which the next start is allowed), max-active
-- (leases held at once, across all workers) and held ('1' while a reserve that max-active held
-- back is owed a wake-up: the next lease to end publishes one), and flow ('1' while any of
-- paused, rate-max, max-active is set: the one field reserve reads for a queue without any).

-- How many of `want` jobs may start now. Returns allow, fl where fl.held is nil, 'paused' or
-- 'rate', fl.retry_at the Unix ms the rate allows the next start, fl.emission, fl.tat the rate
-- limit's spacing (ms) and state when a rate is set, and fl.limited true when max-active cut
-- `want` down: whether that held anything back is known only once the candidates are taken
-- (flow_settle), since a queue with nothing ready is not held, just idle.
local function flow_limits(want, now_ms)
  -- one field says whether any setting is there (flow_mark): most queues have none
  if not redis.call('HGET', KEYS[11], 'flow') then return want, {} end
  local s = redis.call('HMGET', KEYS[11], 'paused', 'rate-max', 'rate-per', 'rate-tat', 'max-active')
  local fl = {}
  if s[1] then
    fl.held = 'paused'
    return 0, fl
  end
  local allow = want
  local m = tonumber(s[5])
  if m then
    local room = m - redis.call('ZCARD', KEYS[5])
    if room < allow then
      allow = room > 0 and room or 0
      fl.limited = true
    end
  end
  local rmax, rper = tonumber(s[2]), tonumber(s[3])
  if rmax and rper and allow > 0 then
    fl.emission = rper * 1000 / rmax
    fl.tat = tonumber(s[4]) or 0
    if fl.tat > now_ms then
      allow = 0
      fl.held = 'rate'
      fl.retry_at = fl.tat
    elseif allow > 1 then
      allow = 1
    end
  end
  return allow, fl
end
-- n jobs started now (reserve): the rate limit's next start moves on by n spacings.
local function flow_started(n, now_ms, fl)
  if not fl.emission or n == 0 then return end
  local tat = math.max(fl.tat, now_ms) + fl.emission * n
  redis.call('HSET', KEYS[11], 'rate-tat', string.format('%.3f', tat))
  fl.held = 'rate'
  fl.retry_at = math.ceil(tat)
end
-- After reserve took what max-active allowed: if jobs are still ready now, the limit held them
-- back: the reply says held 'max-active' and the stats field held asks the next lease to end for
-- a wake-up. If nothing is ready now (only jobs due later, or none), nothing was held back: the
-- worker arms its due timer as usual (a held reply would leave it waiting for a lease to end,
-- which may never come when none is running).
local function flow_settle(fl, now_ms)
  if not fl.limited or fl.held then return end
  if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0
     or redis.call('ZCOUNT', KEYS[4], '-inf', now_ms) > 0 then
    fl.held = 'max-active'
    redis.call('HSET', KEYS[11], 'held', '1')
  end
end
-- reserve's reply: { now, next_due, next_lease, jobs, blocked, held, retry_at, more }; next_due:
-- the earliest due time (Unix ms) or false, nil when the caller did not read it
local function reserve_reply(now_ms, jobs, blocked, fl, next_due, more)
  if next_due == nil then
    local nd = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    next_due = nd[2] and tonumber(nd[2]) or false
  end
  local nl = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  return { now_ms, next_due, nl[2] and tonumber(nl[2]) or false, jobs, blocked,
           fl.held or false, fl.retry_at or false, more or 0 }
end
-- ---- end of includes/flow.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(6); if err then return redis.error_reply(err) end
local qtype, worker, count, lease, ttl_failed
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
count, err = req_num(3, 'count', 1, 1000, true); if err then return redis.error_reply(err) end
lease, err = req_num(4, 'lease', 0.001, 86400); if err then return redis.error_reply(err) end
ttl_failed, err = opt_num(5, 'ttl_failed', 0, 315360000, true, 604800); if err then return redis.error_reply(err) end
local alone = ARGV[6]
if alone ~= nil and alone ~= '' and alone ~= '0' and alone ~= '1' then
  return redis.error_reply(argerr(6, 'alone', "must be '1', '0' or '', got " .. shown(alone)))
end
alone = alone == '1'

local now_ms, now_s = now()
local prefix = KEYS[1]
local flow
count, flow = flow_limits(count, now_ms)          -- paused, max-active, rate (includes/flow.lua)
if count == 0 then
  flow_settle(flow, now_ms)
  return reserve_reply(now_ms, {}, 0, flow)
end

-- candidates, in the order they are handed out: { id, source, member, score }
-- source: 'due' (member/score of jobrt:{Q}:due), 'wait' (QUEUE list), 'ready' (LBQUEUE set)
local cands = {}
-- Due entries, earliest first. The first read is also the next due time when none is due yet
-- (the common case: one read); when some are due, up to count of them are taken and the entry
-- after them (count + 1 read by rank) is the next due time.
local next_due = false
local due = {}
local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if first[2] then
  if tonumber(first[2]) <= now_ms then
    local got = redis.call('ZRANGE', KEYS[4], 0, count, 'WITHSCORES')
    for i = 1, #got, 2 do
      local sc = tonumber(got[i + 1])
      if #due < 2 * count and sc <= now_ms then
        due[#due + 1] = got[i]
        due[#due + 1] = got[i + 1]
      else
        next_due = sc
        break
      end
    end
  else
    next_due = tonumber(first[2])
  end
end
if qtype == 'QUEUE' and #due > 0 then due = promote_due(due) end   -- by priority (includes/priority.lua)
if #due > 0 then
  local members = {}
  for i = 1, #due, 2 do
    members[#members + 1] = due[i]
    cands[#cands + 1] = { due[i]:match('^%d+|(.*)$') or due[i], 'due', due[i], due[i + 1] }
  end
  redis.call('ZREM', KEYS[4], unpack(members))
end
local rest = count - #cands
if rest > 0 then
  if qtype == 'QUEUE' then
    queue_candidates(cands, rest)                 -- by priority, the wait list as priority 0
  elseif qtype == 'LBQUEUE' then
    local got = redis.call('ZPOPMIN', KEYS[3], rest)
    for i = 1, #got, 2 do cands[#cands + 1] = { got[i]:match('^%d+|(.*)$'), 'ready', got[i], got[i + 1] } end
  end
end

local jobs, leases, entries, running = {}, {}, {}, {}
local fails, finished, dropped, wake = {}, {}, 0, false
local blocked = 0
local stop_at = nil      -- index of the first candidate not taken (it and those after go back)
local expiry = now_ms + math.floor(lease * 1000 + 0.5)
-- numbers become text once here: number to text is sprintf in Redis' Lua, dear per job
local expiry_s = string.format('%d', expiry)
for i = 1, #cands do
  local jid, source = cands[i][1], cands[i][2]
  local rec = prefix .. jid
  -- 1 function, 2 args, 3 attempts, 4 retries, 5 timeout, 6 hash, 7 state, 8 suspect
  local f = redis.call('HMGET', rec, 'function', 'args', 'attempts', 'retries', 'timeout', 'hash', 'state', 'suspect')
  if f[1] and f[7] ~= 'executing' and f[8] and not (alone and #jobs == 0) then
    -- it must run alone and this worker is busy (or already took jobs in this call)
    stop_at = i
    blocked = 1
    break
  end
  if f[1] and f[7] ~= 'executing' then
    local attempt = (tonumber(f[3]) or 0) + 1
    -- a new attempt starts clean: an earlier attempt's error and the due time it waited for go
    -- (so a job that then succeeds keeps neither; complete does not need to remove them). Only
    -- a job that ran before or waited in the due set can have them: a first attempt from the
    -- wait list or the ready set costs nothing here
    if f[3] or source == 'due' then redis.call('HDEL', rec, 'due', 'error-reason', 'error-exception') end
    local a = f[3] and string.format('%d', attempt) or '1'     -- a first attempt needs no sprintf
    redis.call('HSET', rec, 'state', 'executing', 'executing-created', now_s, 'worker', worker, 'attempts', a)
    leases[#leases + 1] = expiry_s
    leases[#leases + 1] = worker .. '|' .. a .. '|' .. jid     -- lease_member (includes/lease.lua)
    jobs[#jobs + 1] = { jid, f[1], f[2], attempt, f[4], f[5], f[6], 0, f[8] and 1 or 0 }
    if qtype == 'LBQUEUE' and f[6] then
      if source == 'ready' then entries[#entries + 1] = f[6] end
      running[#running + 1] = f[6]
      running[#running + 1] = jid
    end
    if f[8] then
      -- it runs alone: nothing more for this worker in this call
      stop_at = i + 1
      break
    end
  elseif f[7] == 'executing' or redis.call('EXISTS', rec) == 0 then
    -- an id pushed by hand without a record (or one that runs already): nothing to run
    dropped = dropped + 1
  else
    -- a hand-written record without a job name: fail it where `jobrt failed` shows it
    local dedup = redis.call('HGET', rec, 'dedup')
    redis.call('HSET', rec, 'state', 'finished', 'result', 'failed',
      'error-reason', "record has no 'function' field: set HSET " .. rec .. ' function <job name>',
      'error-exception', '', 'finished-created', now_s)
    redis.call('HDEL', rec, 'due')
    if qtype == 'LBQUEUE' and f[6] and source == 'ready' and redis.call('HGET', KEYS[7], f[6]) == jid then
      redis.call('HDEL', KEYS[7], f[6])
    end
    if free_claims(qtype, jid, f[6], dedup) then wake = true end
    keep_failed(rec, jid, ttl_failed, now_ms, fails)
    finished[#finished + 1] = rec
  end
end
if stop_at then
  -- what was not taken goes back exactly where it was
  local back_wait = {}
  for i = #cands, stop_at, -1 do
    local c = cands[i]
    if c[2] == 'due' then
      redis.call('ZADD', KEYS[4], c[4], c[3])
      local sc = tonumber(c[4])
      if not next_due or sc < next_due then next_due = sc end
    elseif c[2] == 'ready' then
      redis.call('ZADD', KEYS[3], c[4], c[3])
    else
      back_wait[#back_wait + 1] = c[1]
    end
  end
  if #back_wait > 0 then redis.call('RPUSH', KEYS[2], unpack(back_wait)) end
end
flow_started(#jobs, now_ms, flow)
if #leases > 0 then redis.call('ZADD', KEYS[5], unpack(leases)) end
flow_settle(flow, now_ms)
if #leases > 0 then
  local top = redis.call('HINCRBY', KEYS[11], 'total-reserved', #jobs)
  for k = 1, #jobs do jobs[k][8] = top - #jobs + k end
end
if #entries > 0 then redis.call('HDEL', KEYS[7], unpack(entries)) end
if #running > 0 then redis.call('HSET', KEYS[8], unpack(running)) end
if #finished > 0 then
  flush_failed(fails, now_ms)
  redis.call('HINCRBY', KEYS[11], 'total-failed', #finished)
  redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n'))
end
if dropped > 0 then redis.call('HINCRBY', KEYS[11], 'total-dropped', dropped) end
if wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end

-- more: the candidates filled the count, so the queue may hold more ready jobs (a worker that
-- got fewer jobs than it asked for because some ids were dropped asks again)
return reserve_reply(now_ms, jobs, blocked, flow, next_due, #cands >= count and 1 or 0)
