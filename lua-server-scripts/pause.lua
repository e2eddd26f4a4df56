--[[ pause.lua: pause or resume a queue (jobrt pause / jobrt resume).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] action  'pause' | 'resume'
pause: the stats field paused = server time (decimal Unix seconds), unless already paused. From
  then on reserve hands out nothing (reply held 'paused'); jobs already reserved run on and end
  as usual; enqueue, delete and the other scripts work as before. The state is in Redis: it
  holds across worker and Redis restarts (with persistence).
resume: the field paused removed; the wake channel gets the server time (Unix ms), so idle
  workers reserve at once.
Returns: 1 when the state changed, 0 when the queue already was in it.
]]
-- Built by tools/scripts.lua from src/pause.lua and includes/: edit those, then run make.
local SCRIPT = 'pause'
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
-- ---- includes/flow.lua (edit it there, then run make) ----
-- Flow control of a queue (README "Flow control"). Its settings are fields of the stats hash
-- KEYS[11]: paused (server time it was paused, decimal seconds), rate-max and rate-per (at most
-- rate-max jobs start per rate-per seconds: GCRA without a burst, one start every
-- rate-per / rate-max seconds, so no window of rate-per seconds ever sees more than rate-max
-- starts; rate-tat is its state: the Unix ms from which the next start is allowed), max-active
-- (leases held at once, across all workers) and held ('1' while a reserve that max-active held
-- back is owed a wake-up: the next lease to end publishes one), and flow ('1' while any of
-- paused, rate-max, max-active is set: the one field reserve reads for a queue without any).

-- After pause or limit changed a setting: the field flow is 1 while any of paused, rate-max,
-- max-active is set, so that reserve reads one field for queues without any (README "Flow
-- control").
local function flow_mark()
  local s = redis.call('HMGET', KEYS[11], 'paused', 'rate-max', 'max-active')
  if s[1] or s[2] or s[3] then
    redis.call('HSET', KEYS[11], 'flow', '1')
  else
    redis.call('HDEL', KEYS[11], 'flow')
  end
end
-- ---- end of includes/flow.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local action = ARGV[2]
if action ~= 'pause' and action ~= 'resume' then
  return redis.error_reply(argerr(2, 'action', "must be 'pause' or 'resume', got " .. shown(action or '')))
end

local now_ms, now_s = now()
if action == 'pause' then
  local n = redis.call('HSETNX', KEYS[11], 'paused', now_s)
  if n == 1 then flow_mark() end
  return n
end
if redis.call('HDEL', KEYS[11], 'paused') == 0 then return 0 end
flow_mark()
redis.call('PUBLISH', KEYS[13], ms(now_ms))
return 1
