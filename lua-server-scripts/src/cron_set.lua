--[[ cron_set.lua: create or replace a cron entry of a queue (jobrt cron add, cron = 'EXPR' in a
job file).

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type   QUEUE | LBQUEUE | DELQUEUE
  [2] name   1..200 bytes, no control characters, { or } (the rules of job ids)
  [3] entry  JSON object (at most 65536 bytes): job (job name), args (JSON text), schedule (the
             cron expression: the client checks it), tz (time zone name), id_prefix (the tick's
             job id is id_prefix .. tick in Unix seconds), missed ('once' | 'skip'), source
             ('cli': jobrt cron add | 'file': declared in a job file); other fields are kept
Writes the stats fields cron:<name> = entry and, for a new entry or one whose schedule or tz
  changed, cron-last:<name> = now (Unix ms): its ticks start after now. Replacing an entry with
  the same schedule and tz keeps cron-last (no tick is run twice or skipped).
An entry of the other source with this name is not replaced: an error says so (a file entry is
  changed in its file, a cli entry with jobrt cron delete).
Publishes: "cron" on the wake channel when the entry is new or changed (workers reload the
  queue's entries; older workers take it as a wake-up).
Returns: 0 unchanged, 1 created, 2 replaced (ticks start again from now), 3 replaced (same
  schedule: ticks go on)
]]
local SCRIPT = 'cron_set'
--- @include "args"
--- @include "time"
--- @include "cron"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(3); if err then return redis.error_reply(err) end
local qtype, name
qtype, err = queue_type(); if err then return redis.error_reply(err) end
name, err = cron_name(2); if err then return redis.error_reply(err) end
if not name then return redis.error_reply(argerr(2, 'cron name', 'is missing')) end
local text = ARGV[3] or ''
if #text > 65536 then return redis.error_reply(argerr(3, 'entry', 'must be at most 65536 bytes, got ' .. #text)) end
local ok, e = pcall(cjson.decode, text)
if not ok or type(e) ~= 'table' then return redis.error_reply(argerr(3, 'entry', 'must be a JSON object, got ' .. shown(text))) end
for _, k in ipairs({ 'job', 'args', 'schedule', 'tz', 'id_prefix' }) do
  if type(e[k]) ~= 'string' or e[k] == '' then
    return redis.error_reply(argerr(3, 'entry', 'field ' .. k .. ' must be a non-empty string'))
  end
end
if e.missed ~= 'once' and e.missed ~= 'skip' then return redis.error_reply(argerr(3, 'entry', "field missed must be 'once' or 'skip'")) end
if e.source ~= 'cli' and e.source ~= 'file' then return redis.error_reply(argerr(3, 'entry', "field source must be 'cli' or 'file'")) end
if not pcall(cjson.decode, e.args) then return redis.error_reply(argerr(3, 'entry', 'field args must be JSON text, got ' .. shown(e.args))) end

local now_ms = now()
local field = 'cron:' .. name
local old = redis.call('HGET', KEYS[11], field)
local result = 1
if old then
  if old == text then return 0 end
  local okd, o = pcall(cjson.decode, old)
  if okd and type(o) == 'table' and o.source ~= e.source then
    return redis.error_reply(SCRIPT .. ': cron entry ' .. shown(name) .. ' of queue ' .. shown(qname) ..
      (o.source == 'file' and ' is declared in a job file (' .. tostring(o.file or '?') .. '): change it there' or
       ' was added with jobrt cron add: delete it first (jobrt cron delete ' .. name .. ')'))
  end
  result = (okd and type(o) == 'table' and o.schedule == e.schedule and o.tz == e.tz) and 3 or 2
end
redis.call('HSET', KEYS[11], field, text)
if result ~= 3 or redis.call('HEXISTS', KEYS[11], 'cron-last:' .. name) == 0 then
  redis.call('HSET', KEYS[11], 'cron-last:' .. name, ms(now_ms))
end
redis.call('PUBLISH', KEYS[13], 'cron')
return result
