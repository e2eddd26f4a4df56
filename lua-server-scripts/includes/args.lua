-- Argument checks. Each returns the value, or nil and a message naming the script and argument;
-- '' (or a missing ARGV) stands for an argument not given.
--- @include "keys"
--- @include "utf8"
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
-- a job id or job name: 1..maxlen bytes of UTF-8, no control characters and no '{' '}'
-- (README "Names")
local function name_arg(i, name, maxlen, required)
  local v, err
  if required then v, err = req_str(i, name, maxlen) else v, err = opt_str(i, name, maxlen) end
  if v and v:find('[%c{}]') then
    return nil, argerr(i, name, "must not contain control characters (newline, tab...) or '{' '}', got " .. shown(v))
  end
  local bad, c
  if v then bad, c = utf8_bad(v) end
  if bad then
    return nil, argerr(i, name, 'must be UTF-8: byte offset ' .. bad .. ' is ' .. string.format('0x%02x', c) .. ', got ' .. shown((v:gsub('[\128-\255]', function(b) return '\\' .. b:byte() end))))
  end
  return v, err
end
