--[[ list_failed.lua: one page of the failed set, newest first, with the records.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV ('' = default):
  [1] type    QUEUE | LBQUEUE | DELQUEUE
  [2] offset  whole number >= 0; '' = 0
  [3] count   whole number 1..1000; '' = 100
Returns: { total, records } where total is the size of the failed set and records is an array
  of flat field/value arrays (as get.lua); entries whose record expired are left out.
]]
-- Built by tools/scripts.lua from src/list_failed.lua and includes/: edit those, then run make.
local SCRIPT = 'list_failed'
-- ---- includes/args.lua (edit it there, then run make) ----
-- Argument checks. Each returns the value, or nil and a message naming the script and argument;
-- '' (or a missing ARGV) stands for an argument not given.
-- ---- includes/keys.lua (edit it there, then run make) ----
-- The 14 standard KEYS of one queue, in order (README "Keys"): KEYS[1] is the prefix of the job
-- records, KEYS[13] and KEYS[14] are channel names. check_keys() -> queue name | nil, message.
local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }
-- a value quoted for an error message, at most 40 bytes of it
local function shown(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  return "'" .. v .. "'"
end
-- "<script>: ARGV[i] <name> <msg>"
local function argerr(i, name, msg)
  return SCRIPT .. ': ARGV[' .. i .. '] ' .. name .. ' ' .. msg
end
local function check_keys()
  if #KEYS ~= 14 then
    return nil, SCRIPT .. ': expected the 14 standard KEYS of one queue (see lua-server-scripts/README.md), got ' .. #KEYS
  end
  local prefix = KEYS[1]:match('^(jobrt:{.+}:)job:$')
  if not prefix then
    return nil, SCRIPT .. ": KEYS[1] must be 'jobrt:{QUEUE}:job:', got " .. shown(KEYS[1])
  end
  for i = 2, 14 do
    if KEYS[i] ~= prefix .. SUFFIX[i] then
      return nil, SCRIPT .. ': KEYS[' .. i .. '] must be ' .. shown(prefix .. SUFFIX[i]) .. ', got ' .. shown(KEYS[i])
    end
  end
  return prefix:match('^jobrt:{(.+)}:$')
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

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, offset, count
qtype, err = queue_type(); if err then return redis.error_reply(err) end
offset, err = opt_num(2, 'offset', 0, 1e12, true, 0); if err then return redis.error_reply(err) end
count, err = opt_num(3, 'count', 1, 1000, true, 100); if err then return redis.error_reply(err) end

local ids = redis.call('ZREVRANGE', KEYS[6], offset, offset + count - 1)
local out = {}
for i = 1, #ids do
  local r = redis.call('HGETALL', KEYS[1] .. ids[i])
  if #r > 0 then out[#out + 1] = r end
end
return { redis.call('ZCARD', KEYS[6]), out }
