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
-- Built by tools/scripts.lua from src/delete.lua and includes/: edit those, then run make.
local SCRIPT = 'delete'
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
-- a job id or job name: 1..maxlen bytes, no control characters and no '{' '}' (README "Names")
local function name_arg(i, name, maxlen, required)
  local v, err
  if required then v, err = req_str(i, name, maxlen) else v, err = opt_str(i, name, maxlen) end
  if v and v:find('[%c{}]') then
    return nil, argerr(i, name, "must not contain control characters (newline, tab...) or '{' '}', got " .. shown(v))
  end
  return v, err
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

-- ---- end of includes/priority.lua ----
local function lease_member(worker, attempt, jid) return worker .. '|' .. attempt .. '|' .. jid end
-- ---- end of includes/lease.lua ----
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

-- Parent pid (flow fid) is deleted: every child of it still pending gets a d: entry (whoever
-- carries it over deletes that child, and its own pending children), and its children hash
-- and waiting entry go. Returns the number of outbox entries written.
local function flow_cascade(pid, fid, now_ms)
  local k = KEYS[18] .. pid
  local all = redis.call('HGETALL', k)
  local n = 0
  local text = (fid or '') .. '\n' .. flow_qname() .. '\n' .. pid
  for i = 1, #all, 2 do
    if all[i + 1]:match('^[^\n]*\n([^\n]*)') == 'pending' then
      flow_out('d:' .. all[i], text, now_ms)
      n = n + 1
    end
  end
  redis.call('DEL', k)
  redis.call('HDEL', KEYS[15], 'p:' .. pid)
  redis.call('ZREM', KEYS[17], pid)
  return n
end

-- n outbox entries were written: tell the workers of this queue ("flow:<ms>" on the wake
-- channel: the time from which any of them may carry the entries over if their writer has not).
local function flow_wake(n, now_ms)
  if n > 0 then redis.call('PUBLISH', KEYS[13], 'flow:' .. ms(now_ms + FLOW_FRESH_MS)) end
end

-- ---- end of includes/flows.lua ----

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
