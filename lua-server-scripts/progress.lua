--[[ progress.lua: store and publish the progress of a running job (job:progress(value)).

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then
  [15] jobrt:{Q}:progress   the progress channel
ARGV:
  [1] type     QUEUE | LBQUEUE | DELQUEUE
  [2] worker   worker id that holds the job
  [3] id       job id
  [4] attempt  the attempt the lease belongs to
  [5] value    JSON text: a number from 0 to 100, or an object or array (at most 65536 bytes)
Only the attempt that holds the lease "<worker>|<attempt>|<id>" (and was not deleted while
  executing) may report: the record gets progress = value (the latest report of any attempt:
  it stays when the job finishes or is retried, until the next report), and KEYS[15] gets the
  message "<record key>\n<value>".
Returns: 1 stored and published, 0 not: that lease is not held (stop the job).
]]
-- Built by tools/scripts.lua from src/progress.lua and includes/: edit those, then run make.
local SCRIPT = 'progress'
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
-- ---- end of includes/args.lua ----
-- ---- includes/lease.lua (edit it there, then run make) ----
-- Leases. A lease belongs to one attempt of one job of one queue: it is the member
-- "<worker>|<attempt>|<id>" of KEYS[5] (score: expiry in Unix ms; + 0.5 marks a job deleted
-- while it runs), so a renewal, completion or release for any other attempt finds nothing.
-- ---- includes/time.lua (edit it there, then run make) ----
-- ---- end of includes/time.lua ----
-- ---- includes/priority.lua (edit it there, then run make) ----
-- QUEUE priorities (README "Queue types"). A QUEUE job enqueued with a priority other than 0
-- waits in the ready set KEYS[3] (score -priority, member "<order>|<id>"), the others in the wait
-- list KEYS[2], which counts as priority 0: highest priority first, first in, first out among
-- equal priorities.

-- ---- end of includes/priority.lua ----
local function lease_member(worker, attempt, jid) return worker .. '|' .. attempt .. '|' .. jid end
-- ---- end of includes/lease.lua ----

local qname, err = check_keys({ 'progress' })
if not qname then return redis.error_reply(err) end
err = max_argv(5); if err then return redis.error_reply(err) end
local qtype, worker, jid, attempt
qtype, err = queue_type(); if err then return redis.error_reply(err) end
worker, err = worker_id(2); if err then return redis.error_reply(err) end
jid, err = req_str(3, 'id', 256); if err then return redis.error_reply(err) end
attempt, err = req_num(4, 'attempt', 1, 1e15, true); if err then return redis.error_reply(err) end
local value = ARGV[5] or ''
if value == '' then return redis.error_reply(argerr(5, 'value', 'is missing (JSON: a number from 0 to 100, or an object)')) end
if #value > 65536 then return redis.error_reply(argerr(5, 'value', 'must be at most 65536 bytes, got ' .. #value)) end
local ok, v = pcall(cjson.decode, value)
if not ok then return redis.error_reply(argerr(5, 'value', 'must be JSON text, got ' .. shown(value))) end
if type(v) == 'number' then
  if v < 0 or v > 100 then return redis.error_reply(argerr(5, 'value', 'must be from 0 to 100 when it is a number, got ' .. shown(value))) end
elseif type(v) ~= 'table' then
  return redis.error_reply(argerr(5, 'value', 'must be a number from 0 to 100 or a JSON object or array, got ' .. shown(value)))
end

local e = tonumber(redis.call('ZSCORE', KEYS[5], lease_member(worker, ARGV[4], jid)))
if not e or e ~= math.floor(e) then return 0 end
local rec = KEYS[1] .. jid
redis.call('HSET', rec, 'progress', value)
redis.call('PUBLISH', KEYS[15], rec .. '\n' .. value)
return 1
