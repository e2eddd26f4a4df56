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
-- Built by tools/scripts.lua from src/complete.lua and includes/: edit those, then run make.
local SCRIPT = 'complete'
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
-- ---- includes/json_text.lua (edit it there, then run make) ----
-- JSON text (job args and results) is UTF-8 (RFC 8259) and has a size limit.
-- json_text_error(i, name, v, limit) -> nil when v (ARGV[i], called name) is valid UTF-8 of at
-- most `limit` bytes, else the error message (with the byte offset, counted from 0, of the first
-- invalid byte).
-- Cost in Redis' Lua: about 17 ns per byte of ASCII, 60-100 ns per byte of other text (one
-- string.find, then a gsub per kind of multi-byte character).
local function json_text_error(i, name, v, limit)
  if #v > limit then
    return argerr(i, name, 'is ' .. #v .. ' bytes, more than the limit of ' .. limit .. ' bytes')
  end
  if not string.find(v, '[\128-\255]') then return nil end
  -- every valid multi-byte character becomes one ASCII byte; no byte >= 0x80 may be left
  local t = string.gsub(v, '[\194-\223][\128-\191]', '_')
  if string.find(t, '[\224-\239]') then
    t = string.gsub(t, '[\225-\236\238\239][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\224[\160-\191][\128-\191]', '_')
    t = string.gsub(t, '\237[\128-\159][\128-\191]', '_')
  end
  if string.find(t, '[\240-\244]') then
    t = string.gsub(t, '[\241-\243][\128-\191][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\240[\144-\191][\128-\191][\128-\191]', '_')
    t = string.gsub(t, '\244[\128-\143][\128-\191][\128-\191]', '_')
  end
  if not string.find(t, '[\128-\255]') then return nil end
  -- invalid: find the first bad byte, one character at a time
  local p, n = 1, #v
  while true do
    p = string.find(v, '[\128-\255]', p)
    local c = string.byte(v, p)
    local k, lo, hi = 0, 128, 191
    if c >= 194 and c <= 223 then k = 1
    elseif c == 224 then k, lo = 2, 160
    elseif c == 237 then k, hi = 2, 159
    elseif c >= 225 and c <= 239 then k = 2
    elseif c == 240 then k, lo = 3, 144
    elseif c >= 241 and c <= 243 then k = 3
    elseif c == 244 then k, hi = 3, 143 end
    local ok = k > 0 and p + k <= n
    if ok then
      local c1 = string.byte(v, p + 1)
      ok = c1 >= lo and c1 <= hi
      for j = p + 2, p + k do
        local cj = string.byte(v, j)
        if ok and (cj < 128 or cj > 191) then ok = false end
      end
    end
    if not ok then
      return argerr(i, name, 'must be UTF-8 (RFC 8259): byte offset ' .. (p - 1) .. ' is ' ..
        string.format('0x%02x', c) .. ' (send binary data as base64)')
    end
    p = p + k + 1
  end
end
-- ---- end of includes/json_text.lua ----

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
