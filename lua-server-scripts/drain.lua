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
-- Built by tools/scripts.lua from src/drain.lua and includes/: edit those, then run make.
local SCRIPT = 'drain'
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
-- ---- end of includes/time.lua ----
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
