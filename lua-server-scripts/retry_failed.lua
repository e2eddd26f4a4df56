--[[ retry_failed.lua: queue the jobs of the failed set again (seed 003's retryFailedJobs).

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of failed jobs handled per call (oldest first); '' = 1000
  [3] id     optional: retry only this job (when it is in the failed set); limit is ignored
Each failed job whose record still exists: failures, stalls and suspect removed (attempts stays:
  it only grows), result fields removed, no expiry, state=pending, queued as if new (QUEUE: wait list, or the ready set when it has a priority; DELQUEUE: due now; LBQUEUE: merged
  into the waiting or parked entry of its jobHash (its record is then deleted), parked when the
  jobHash runs, else a new entry). Failed-set entries whose record expired are dropped.
Flows (README "Flows"): a retried child of a flow is linked to its parent again and tells it
  that it waits to run again (u: entry 'retry' in the outbox: a parent that failed because of
  it goes back to waiting); a retried parent's children hash lives with its record again, and a
  parent that failed because of a child (field failed-child) goes back to waiting for its
  children (jobrt:{Q}:flow:waiting) instead of being queued: it runs once its failed children
  were retried and succeeded.
Publishes: the wake channel (now, Unix ms) when jobs were queued; "flow:<ms>" when outbox
  entries were written.
Returns: { queued, examined }: jobs queued again, failed-set entries handled (call again while
  examined equals limit).
]]
-- Built by tools/scripts.lua from src/retry_failed.lua and includes/: edit those, then run make.
local SCRIPT = 'retry_failed'
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



-- n outbox entries were written: tell the workers of this queue ("flow:<ms>" on the wake
-- channel: the time from which any of them may carry the entries over if their writer has not).
local function flow_wake(n, now_ms)
  if n > 0 then redis.call('PUBLISH', KEYS[13], 'flow:' .. ms(now_ms + FLOW_FRESH_MS)) end
end

-- ---- end of includes/flows.lua ----

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, limit, one
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end
one, err = name_arg(3, 'id', 256); if err then return redis.error_reply(err) end

local now_ms = now()
local prefix = KEYS[1]
local ids
if one then
  ids = redis.call('ZSCORE', KEYS[6], one) and { one } or {}
else
  ids = redis.call('ZRANGE', KEYS[6], 0, limit - 1)
end
if #ids == 0 then return { 0, 0 } end
redis.call('ZREM', KEYS[6], unpack(ids))
local n, wait, nflow = 0, {}, 0
for i = 1, #ids do
  local jid = ids[i]
  local rec = prefix .. jid
  local f = redis.call('HMGET', rec, 'state', 'result', 'hash', 'pending-created', 'priority', 'flow', 'parent-queue',
    'parent-id', 'children', 'failed-child')
  if f[1] == 'finished' and f[2] == 'failed' then
    n = n + 1
    redis.call('HDEL', rec, 'result', 'result-value', 'error-reason', 'error-exception', 'finished-created',
      'executing-created', 'worker', 'dedup', 'due', 'failures', 'stalls', 'suspect', 'failed-child')
    -- attempts stays: it only grows (the fencing token of each new attempt)
    redis.call('HSET', rec, 'state', 'pending')
    redis.call('PERSIST', rec)
    if f[7] then
      -- a child of a flow: linked again, and its parent learns that it waits to run again
      local link = (f[6] or '') .. '\n' .. f[7] .. '\n' .. (f[8] or '')
      redis.call('HSET', KEYS[15], 'l:' .. jid, link)
      flow_tell(jid, link, 'retry', '', false, now_ms)
      nflow = nflow + 1
    end
    if f[9] then
      redis.call('PERSIST', KEYS[18] .. jid)
      redis.call('HSET', KEYS[15], 'p:' .. jid, '1')
    end
    if f[10] then
      -- it failed because of a child: it waits for its children again
      redis.call('ZADD', KEYS[17], now_ms, jid)
    elseif qtype == 'QUEUE' then
      if not queue_put_back(jid, order_of(f[4]), f[5]) then wait[#wait + 1] = jid end
    elseif qtype == 'DELQUEUE' then
      redis.call('ZADD', KEYS[4], now_ms, order_of(f[4]) .. '|' .. jid)
    else
      local h = f[3] or ''
      local running = redis.call('HGET', KEYS[8], h)
      local other
      if running then other = redis.call('HGET', KEYS[9], h) else other = redis.call('HGET', KEYS[7], h) end
      if other then
        -- one entry per jobHash: count this job into the waiting (or parked) one
        redis.call('DEL', rec)
        if running then
          redis.call('HINCRBYFLOAT', prefix .. other, 'priority', 1)
        else
          local o = redis.call('HGET', prefix .. other, 'pending-created')
          local p = -tonumber(redis.call('ZINCRBY', KEYS[3], -1, order_of(o) .. '|' .. other))
          redis.call('HSET', prefix .. other, 'priority', tostring(p))
        end
      elseif running then
        redis.call('HSET', KEYS[9], h, jid)
      else
        redis.call('HSET', KEYS[7], h, jid)
        redis.call('ZADD', KEYS[3], -(tonumber(f[5]) or 1), order_of(f[4]) .. '|' .. jid)
      end
    end
  end
end
if #wait > 0 then redis.call('LPUSH', KEYS[2], unpack(wait)) end
if n > 0 then redis.call('PUBLISH', KEYS[13], ms(now_ms)) end
flow_wake(nflow, now_ms)
return { n, #ids }
