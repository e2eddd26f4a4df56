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
local SCRIPT = 'progress'
--- @include "args"
--- @include "lease"

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
