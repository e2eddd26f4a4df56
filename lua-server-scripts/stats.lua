--[[ stats.lua: counts per state of one queue.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
Returns: a flat field/value array:
  pending    jobs ready to run now (wait list + ready set + due entries whose time has come)
  delayed    due entries in the future (DELQUEUE jobs, delayed QUEUE jobs, retries in backoff)
  parked     LBQUEUE jobs waiting for the same jobHash to finish
  executing  leases held by workers (a job deleted while executing counts until it has stopped)
  failed     entries of the failed set
  completed, total-failed, retried, expired, cancelled, dropped   counters since the queue was
             created: successful jobs, jobs moved to the failed set, retries scheduled, leases
             that ran out, jobs deleted while executing that have since stopped, hand-pushed
             ids reserve found no record for (or found already executing) and dropped
  postponed  counter: jobs put back by job:retry_later (postpone)
  paused     1 when the queue is paused (jobrt pause), else 0
  rate-max, rate-per, max-active   the limits (jobrt limit): at most rate-max jobs start per
             rate-per seconds, at most max-active run at once; 0 when not set
  crons      the number of cron entries of the queue
]]
-- Built by tools/scripts.lua from src/stats.lua and includes/: edit those, then run make.
local SCRIPT = 'stats'
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
-- ---- end of includes/time.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(1); if err then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end

local now_ms = now()
local due_now = redis.call('ZCOUNT', KEYS[4], '-inf', now_ms)
local c = redis.call('HMGET', KEYS[11], 'total-completed', 'total-failed', 'total-retried', 'total-expired',
  'total-cancelled', 'total-dropped', 'total-postponed', 'paused', 'rate-max', 'rate-per', 'max-active')
local crons = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[11])) do
  if f:sub(1, 5) == 'cron:' then crons = crons + 1 end
end
return {
  'pending', redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + due_now,
  'delayed', redis.call('ZCARD', KEYS[4]) - due_now,
  'parked', redis.call('HLEN', KEYS[9]),
  'executing', redis.call('ZCARD', KEYS[5]),
  'failed', redis.call('ZCOUNT', KEYS[6], '(' .. ms(now_ms), '+inf'),      -- records not expired
  'completed', tonumber(c[1]) or 0,
  'total-failed', tonumber(c[2]) or 0,
  'retried', tonumber(c[3]) or 0,
  'expired', tonumber(c[4]) or 0,
  'cancelled', tonumber(c[5]) or 0,
  'dropped', tonumber(c[6]) or 0,
  'postponed', tonumber(c[7]) or 0,
  'paused', c[8] and 1 or 0,
  'rate-max', tonumber(c[9]) or 0,
  'rate-per', c[10] or '0',
  'max-active', tonumber(c[11]) or 0,
  'crons', crons,
}
