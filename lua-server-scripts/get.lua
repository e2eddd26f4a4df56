--[[ get.lua: read one job record by id.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  [2] id    job id
Returns: the record as a flat array field1, value1, field2, value2, ... (README "Job record"),
  or an empty array when there is no such job (never enqueued, deleted, or expired) or when
  the job was deleted while executing (field cancelled set: it is still stopping on its worker).
  Equivalent to HGETALL jobrt:{Q}:job:<id> (treating a record with a cancelled field as none),
  which other languages may use directly.
]]
-- Built by tools/scripts.lua from src/get.lua and includes/: edit those, then run make.
local SCRIPT = 'get'
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
-- ---- end of includes/args.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, jid
qtype, err = queue_type(); if err then return redis.error_reply(err) end
jid, err = req_str(2, 'id', 256); if err then return redis.error_reply(err) end
if redis.call('HEXISTS', KEYS[1] .. jid, 'cancelled') == 1 then return {} end
return redis.call('HGETALL', KEYS[1] .. jid)
