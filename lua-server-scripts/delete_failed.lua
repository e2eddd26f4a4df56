--[[ delete_failed.lua: delete the jobs of the failed set (seed 003's deleteFailedJobs).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] limit  whole number 1..10000 of failed jobs deleted per call (oldest first); '' = 1000
Returns: the number of failed-set entries removed (call again while it equals limit).
]]
-- Built by tools/scripts.lua from src/delete_failed.lua and includes/: edit those, then run make.
local SCRIPT = 'delete_failed'
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
-- ---- includes/utf8.lua (edit it there, then run make) ----
-- ---- end of includes/utf8.lua ----
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

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, limit
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 10000, true, 1000); if err then return redis.error_reply(err) end

local prefix = KEYS[1]
local ids = redis.call('ZRANGE', KEYS[6], 0, limit - 1)
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[6], unpack(ids))
local recs = {}
for i = 1, #ids do
  -- a failed id that was enqueued again is no longer failed: keep that record
  if redis.call('HGET', prefix .. ids[i], 'result') == 'failed' then recs[#recs + 1] = prefix .. ids[i] end
end
if #recs > 0 then redis.call('DEL', unpack(recs)) end
return #ids
