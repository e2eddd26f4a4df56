--[[ get.lua: read one job record by id.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  [2] id    job id
Returns: the record as a flat array field1, value1, field2, value2, ... (README "Job record"),
  or an empty array when there is no such job (never enqueued, deleted, or expired) or when
  the job was deleted while executing (field cancelled set: it is still stopping on its worker).
  Equivalent to HGETALL jobrt:{Q}:job:<id> (treating a record with a cancelled field as none),
  which other languages may use directly, plus the fields id and queue, which the key holds
  and the record does not store.
]]
-- Built by tools/scripts.lua from src/get.lua and includes/: edit those, then run make.
local SCRIPT = 'get'
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
-- ---- includes/record.lua (edit it there, then run make) ----
-- Reading a job record (README "Job record"): the key holds the job's id and queue, so new
-- records do not store them, and a job not handed out yet has no attempts field; readers
-- answer them beside the stored fields.
-- with_key_fields(flat, jid, qname) -> the HGETALL reply flat, with id, queue and attempts 0
-- appended when the record does not hold them (records written before they were dropped
-- do); {} stays {}.
local function with_key_fields(flat, jid, qname)
  if #flat == 0 then return flat end
  local has_id, has_queue, has_attempts = false, false, false
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == 'id' then has_id = true elseif f == 'queue' then has_queue = true
    elseif f == 'attempts' then has_attempts = true end
  end
  if not has_id then flat[#flat + 1] = 'id'; flat[#flat + 1] = jid end
  if not has_queue then flat[#flat + 1] = 'queue'; flat[#flat + 1] = qname end
  if not has_attempts then flat[#flat + 1] = 'attempts'; flat[#flat + 1] = '0' end
  return flat
end
-- ---- end of includes/record.lua ----

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, jid
qtype, err = queue_type(); if err then return redis.error_reply(err) end
jid, err = name_arg(2, 'id', 256, true); if err then return redis.error_reply(err) end
if redis.call('HEXISTS', KEYS[1] .. jid, 'cancelled') == 1 then return {} end
return with_key_fields(redis.call('HGETALL', KEYS[1] .. jid), jid, qname)
