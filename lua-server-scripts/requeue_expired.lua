--[[ requeue_expired.lua: take back the jobs whose lease ran out (seed 002's REQUEUE; seed 003's
stale-job flushing). Atomic, so every worker may run it at once: a job is taken back once.

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV ('' = default):
  [1] type        QUEUE | LBQUEUE | DELQUEUE
  [2] limit       whole number 1..10000 of leases handled per call; '' = 1000
  [3] max_stalls  whole number 0..1000: lease losses in a row a job survives; '' = 2
  [4] ttl_failed  seconds a failed record is kept (0..315360000; 0: removed at once); '' = 604800
A lost lease is not the job's fault (its worker crashed, froze or lost Redis): it uses up no
  retry. Each expired lease "<worker>|<attempt>|<id>" whose attempt is the job's current one
  (state executing, attempts = attempt): record stalls+1 (lease losses in a row; an outcome
  from complete resets them). stalls <= max_stalls: state=pending, suspect=1 (from now on the
  job runs alone in its worker process, see reserve, so a later loss is its own doing),
  error-reason says whose lease expired, and the job goes back to its place in the order
  (QUEUE: the consuming end of the wait list, in enqueue order among those taken back;
  LBQUEUE: the ready set by priority and enqueue order, jobHash still held; DELQUEUE: the due
  set at its due time). Otherwise it is a poison job (one that crashed or froze its worker in
  every one of those attempts, the last ones while running alone): state=finished,
  result=failed, error-reason says so, into jobrt:{Q}:failed, EXPIRE ttl_failed, LBQUEUE
  releases the jobHash (queues its parked job), DELQUEUE frees its identity@timestamp entry.
A job deleted while executing (lease score E + 0.5) whose lease ran out: its record is
  deleted and it frees the same claims; neither requeued nor failed, counted in cancelled (and
  in the stats counter total-cancelled). A lease of an attempt that is not the job's current
  one is only removed; a job whose record vanished under the lease has what points at its id
  freed (its LBQUEUE jobHash, its DELQUEUE identity entry). Every expired lease counts in
  total-expired.
Flows (README "Flows"): a poison job, or a job whose record vanished, that is the child of a
  flow gets its news for the parent in the outbox (as complete does).
The record keys of the failed and cancelled jobs are published on jobrt:{Q}:results, one per
  line, in one message.
Publishes: the wake channel (now, Unix ms) when jobs were put back, a parked job was queued,
  or a reserve held back by max-active is owed a wake-up (stats field held).
Returns: { requeued, failed, cancelled, flow_entries } (outbox entries written)
]]
-- Built by tools/scripts.lua from src/requeue_expired.lua and includes/: edit those, then run make.
local SCRIPT = 'requeue_expired'
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
-- A job whose record vanished (deleted by hand, or evicted by a Redis that does not run with
-- maxmemory-policy noeviction) cannot say what it holds: find what points at jid and free it,
-- so that no jobHash or identity stays wedged. Rare, and linear in what is held. Returns true
-- when a parked job was queued.
local function free_vanished(qtype, jid)
  local woke = false
  if qtype == 'LBQUEUE' then
    for _, k in ipairs({ 8, 7, 9 }) do
      local all = redis.call('HGETALL', KEYS[k])
      for i = 1, #all, 2 do
        if all[i + 1] == jid then
          if k == 8 then
            if lb_release(all[i], jid) then woke = true end
          else
            redis.call('HDEL', KEYS[k], all[i])
          end
        end
      end
    end
  elseif qtype == 'DELQUEUE' then
    local all = redis.call('HGETALL', KEYS[10])
    for i = 1, #all, 2 do
      if all[i + 1] == jid then redis.call('HDEL', KEYS[10], all[i]) end
    end
  end
  return woke
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

-- A QUEUE job with a priority goes back to the ready set; true when it did (others go to the
-- wait list: the caller's business).
local function queue_put_back(jid, order, priority)
  local p = tonumber(priority)
  if not p or p == 0 then return false end
  redis.call('ZADD', KEYS[3], -p, order .. '|' .. jid)
  return true
end
-- ---- end of includes/priority.lua ----
-- worker, attempt (string), id of a lease member, or nil
local function lease_parts(m) return m:match('^([^|]*)|(%d+)|(.*)$') end
-- A job taken back from its worker (lease ran out, or released) goes back to its place in the
-- order: LBQUEUE by priority then enqueue order (its jobHash stays held), DELQUEUE and delayed
-- jobs at their due time, QUEUE jobs with a priority to the ready set, the other QUEUE jobs to
-- the consuming end of the wait list, in enqueue order among themselves (collected in `front`;
-- flush_front writes them). f: the record's pending-created, priority, due, dedup.
local function put_back(qtype, jid, f, now_ms, front)
  local order = order_of(f[1])
  if qtype == 'LBQUEUE' then
    redis.call('ZADD', KEYS[3], -(tonumber(f[2]) or 1), order .. '|' .. jid)
  elseif qtype == 'DELQUEUE' then
    local due_ms = f[3] and math.floor(tonumber(f[3]) * 1000 + 0.5) or tonumber(f[4] and f[4]:match('@(%d+)$'))
    redis.call('ZADD', KEYS[4], due_ms or now_ms, order .. '|' .. jid)
  elseif not queue_put_back(jid, order, f[2]) then
    front[#front + 1] = { order, jid }
  end
end
-- QUEUE jobs collected by put_back: the oldest ends up at the consuming (right) end.
local function flush_front(front)
  if #front == 0 then return end
  table.sort(front, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return a[2] > b[2] end)
  local ids = {}
  for i = 1, #front do ids[i] = front[i][2] end
  redis.call('RPUSH', KEYS[2], unpack(ids))
end
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

-- A lease ended (outcome, hand-back, lease ran out): true when a reserve held back by
-- max-active is owed a wake-up (the caller publishes it), once.
local function flow_freed()
  return redis.call('HDEL', KEYS[11], 'held') == 1
end
-- ---- end of includes/flow.lua ----
-- ---- includes/flows.lua (edit it there, then run make) ----
-- Flows (README "Flows"): a parent job runs after its children, which may live in other
-- queues, so in other Cluster slots. No script touches two queues' keys: what one queue must
-- tell another waits in the first queue's outbox until a client or worker has carried it over
-- (flow_take, flow_deliver on the other queue, flow_ack), and flow_deliver is idempotent.
-- The flow keys of queue Q follow the 14 standard KEYS in the scripts that take them:
--   KEYS[15] jobrt:{Q}:flow          hash: l:<id> the link of a child of Q that has not finished
--                                    ("<flow id>\n<parent queue>\n<parent id>"); p:<id> '1' for
--                                    a parent of Q whose children hash still lives as long as
--                                    its record; the outbox texts u:<id> (news of child <id> for
--                                    its parent), c:<queue>|<id> (a child to create) and
--                                    d:<queue>|<id> (a pending child to delete)
--   KEYS[16] jobrt:{Q}:flow:out      zset: the outbox entries (those field names) by the Unix ms
--                                    until which their writer, or the client that took them,
--                                    holds them; afterwards any worker of Q carries them over
--   KEYS[17] jobrt:{Q}:flow:waiting  zset: parents of Q waiting for their children, by the Unix
--                                    ms they began waiting
--   KEYS[18] jobrt:{Q}:children:     prefix of hash jobrt:{Q}:children:<id> of parent <id>: one
--                                    field "<queue>|<id>" per child, value
--                                    "<gen>\n<state>\n<ignore 0|1>\n<index>\n<value>"
local FLOW_KEYS = { 'flow', 'flow:out', 'flow:waiting', 'children:' }
-- how long the writer of an outbox entry holds it before any worker of the queue may take it
local FLOW_FRESH_MS = 5000
-- the gen of a child's last news when its record is gone: nothing can follow it
local FLOW_LAST_GEN = '4503599627370496'

-- the queue name of these KEYS (check_keys has checked them)
local function flow_qname() return (KEYS[1]:match('^jobrt:{([^{}]*)}:job:$')) end

-- The links and parent flags of the jobs ids, in one HMGET: links[id] = link text, parents[id] = true.
-- A queue without a flow hash (no flow job in it now: most queues) answers from one EXISTS, not
-- from an HMGET of two fields per job (a tenth of what complete cost per job).
local function flow_lookup(ids)
  local links, parents = {}, {}
  if #ids == 0 or redis.call('EXISTS', KEYS[15]) == 0 then return links, parents end
  for first = 1, #ids, 1000 do            -- HMGET in pieces: unpack has a limit
    local last = math.min(first + 999, #ids)
    local fields = {}
    for i = first, last do
      fields[#fields + 1] = 'l:' .. ids[i]
      fields[#fields + 1] = 'p:' .. ids[i]
    end
    local got = redis.call('HMGET', KEYS[15], unpack(fields))
    for i = first, last do
      local k = 2 * (i - first)
      if got[k + 1] then links[ids[i]] = got[k + 1] end
      if got[k + 2] then parents[ids[i]] = true end
    end
  end
  return links, parents
end

-- Writes outbox entry `key` = `text`, held by its writer for FLOW_FRESH_MS.
local function flow_out(key, text, now_ms)
  redis.call('HSET', KEYS[15], key, text)
  redis.call('ZADD', KEYS[16], now_ms + FLOW_FRESH_MS, key)
end

-- Job jid of this queue, a child linked by `link`, tells its parent: outcome 'ok' (value: the
-- result JSON), 'failed' (value: the reason), 'deleted', or 'retry' (it waits to run again).
-- Its news are ordered by gen, the record's flow-gen after adding 1 (FLOW_LAST_GEN when its
-- record is gone). A final outcome ends the link; 'retry' keeps it.
local function flow_tell(jid, link, outcome, value, gone, now_ms)
  local gen = gone and FLOW_LAST_GEN or tostring(redis.call('HINCRBY', KEYS[1] .. jid, 'flow-gen', 1))
  local fid, parent = link:match('^([^\n]*)\n(.*)$')
  flow_out('u:' .. jid, fid .. '\n' .. flow_qname() .. '\n' .. parent .. '\n' .. gen .. '\n' .. outcome .. '\n' ..
    (value or ''), now_ms)
  if outcome ~= 'retry' then redis.call('HDEL', KEYS[15], 'l:' .. jid) end
end

-- Job jid finished for good (or went away: gone): tells its parent, when it has one (link),
-- and its children hash, when it is a parent, goes with its record (ttl seconds; 0 or gone: at
-- once). Returns the number of outbox entries written (0 or 1).
local function flow_ended(jid, link, parent, outcome, value, ttl, gone, now_ms)
  if parent then
    local k = KEYS[18] .. jid
    if gone or ttl == 0 then redis.call('DEL', k) else redis.call('EXPIRE', k, ttl) end
    redis.call('HDEL', KEYS[15], 'p:' .. jid)
  end
  if not link then return 0 end
  flow_tell(jid, link, outcome, value, gone, now_ms)
  return 1
end


-- n outbox entries were written: tell the workers of this queue ("flow:<ms>" on the wake
-- channel: the time from which any of them may carry the entries over if their writer has not).
local function flow_wake(n, now_ms)
  if n > 0 then redis.call('PUBLISH', KEYS[13], 'flow:' .. ms(now_ms + FLOW_FRESH_MS)) end
end

-- ---- end of includes/flows.lua ----

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(4); if err then return redis.error_reply(err) end
local qtype, limit, max_stalls, ttl_failed
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end
max_stalls, err = opt_num(3, 'max_stalls', 0, 1000, true, 2); if err then return redis.error_reply(err) end
ttl_failed, err = opt_num(4, 'ttl_failed', 0, 315360000, true, 604800); if err then return redis.error_reply(err) end

local now_ms, now_s = now()
local prefix = KEYS[1]
local got = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, limit)
if #got == 0 then return { 0, 0, 0, 0 } end
local expired, marked = {}, {}
for i = 1, #got, 2 do
  local e = tonumber(got[i + 1])
  expired[#expired + 1] = got[i]
  marked[#expired] = e ~= math.floor(e)     -- E + 0.5: deleted while it ran
end
redis.call('ZREM', KEYS[5], unpack(expired))

local requeued, failed, cancelled, wake, nflow = 0, 0, 0, false, 0
local front, fails, finished = {}, {}, {}
for i = 1, #expired do
  local worker, attempt, jid = lease_parts(expired[i])
  local rec = jid and prefix .. jid
  local f = rec and redis.call('HMGET', rec, 'state', 'attempts', 'stalls', 'hash', 'dedup', 'pending-created',
    'priority', 'due') or {}
  local current = f[1] == 'executing' and tonumber(f[2]) == tonumber(attempt)
  if rec and not f[1] and redis.call('EXISTS', rec) == 0 then
    -- its record vanished under the lease (deleted by hand, evicted): free what points at it
    if free_vanished(qtype, jid) then wake = true end
    local links, parents = flow_lookup({ jid })
    nflow = nflow + flow_ended(jid, links[jid], parents[jid], 'deleted', '', 0, true, now_ms)
  elseif current and marked[i] then
    -- deleted while it ran, and its worker never reported back: it is gone for good
    redis.call('DEL', rec)
    if free_claims(qtype, jid, f[4], f[5]) then wake = true end
    finished[#finished + 1] = rec
    cancelled = cancelled + 1
  elseif current then
    local stalls = (tonumber(f[3]) or 0) + 1
    if stalls <= max_stalls then
      redis.call('HSET', rec, 'state', 'pending', 'stalls', stalls, 'suspect', 1, 'error-reason',
        'lease expired: worker ' .. worker .. ' stopped renewing (attempt ' .. attempt .. ')')
      put_back(qtype, jid, { f[6], f[7], f[8], f[5] }, now_ms, front)
      requeued = requeued + 1
    else
      local reason = 'poison job: its worker stopped renewing its lease in ' .. stalls .. ' attempt(s) in a row' ..
        (stalls > 1 and ', the later ones while it ran alone in its worker process' or '') ..
        ' (last: worker ' .. worker .. ', attempt ' .. attempt .. '): it likely crashes or freezes ' ..
        'the workers that run it; fix the handler, then retry it (jobrt failed ' .. qname .. ' retry)'
      redis.call('HSET', rec, 'state', 'finished', 'result', 'failed', 'stalls', stalls, 'error-reason', reason,
        'error-exception', '', 'finished-created', now_s)
      redis.call('HDEL', rec, 'suspect')
      keep_failed(rec, jid, ttl_failed, now_ms, fails)
      finished[#finished + 1] = rec
      failed = failed + 1
      if free_claims(qtype, jid, f[4], f[5]) then wake = true end
      local links, parents = flow_lookup({ jid })
      nflow = nflow + flow_ended(jid, links[jid], parents[jid], 'failed', reason, ttl_failed, ttl_failed == 0, now_ms)
    end
  end
end
flush_front(front)
if failed > 0 then
  flush_failed(fails, now_ms)
  redis.call('HINCRBY', KEYS[11], 'total-failed', failed)
end
if cancelled > 0 then redis.call('HINCRBY', KEYS[11], 'total-cancelled', cancelled) end
redis.call('HINCRBY', KEYS[11], 'total-expired', #expired)
if #finished > 0 then redis.call('PUBLISH', KEYS[14], table.concat(finished, '\n')) end
if flow_freed() then wake = true end        -- max-active: a held reserve may go
if requeued > 0 or wake then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
flow_wake(nflow, now_ms)
return { requeued, failed, cancelled, nflow }
