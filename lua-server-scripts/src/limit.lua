--[[ limit.lua: set, clear or read the limits of a queue (jobrt limit), across all workers.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  [2..] pairs name, value (none: only read); a value '' removes that limit:
        'rate'        'N/SECONDS': at most N (whole, 1..1000000) jobs start per SECONDS
                      (0.001..86400): one every SECONDS / N, so no window of SECONDS seconds
                      sees more than N starts (GCRA without a burst; reserve keeps its state in
                      the stats field rate-tat)
        'max-active'  N (whole, 1..1000000): at most N jobs of the queue hold a lease at once
Every pair is checked before anything is written. The stats hash gets rate-max, rate-per and
  max-active (a new or removed rate also clears rate-tat, so the new rate starts now). When
  anything changed, the wake channel gets the server time (Unix ms): workers held back by the
  old limits reserve again.
Returns: flat { 'rate-max', N|0, 'rate-per', SECONDS|0, 'max-active', N|0, 'paused', 0|1 }
  after the change (0: no such limit).
]]
local SCRIPT = 'limit'
--- @include "args"
--- @include "time"
--- @include "flow"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
if #ARGV > 5 then return redis.error_reply(SCRIPT .. ': expected at most 5 ARGV (type, then the pairs rate, max-active), got ' .. #ARGV) end
if #ARGV % 2 ~= 1 then return redis.error_reply(SCRIPT .. ': ARGV after [1] must come in pairs (name, value), got ' .. (#ARGV - 1) .. ' values') end
local qtype
qtype, err = queue_type(); if err then return redis.error_reply(err) end
local set, del, seen = {}, {}, {}
for i = 2, #ARGV, 2 do
  local name, v = ARGV[i], ARGV[i + 1]
  if seen[name] then return redis.error_reply(argerr(i, 'name', shown(name) .. ' is given twice')) end
  seen[name] = true
  if name == 'rate' then
    if v == '' then
      del[#del + 1] = 'rate-max'; del[#del + 1] = 'rate-per'; del[#del + 1] = 'rate-tat'
    else
      local n, per = v:match('^(%d+)/([%d%.]+)$')
      n, per = tonumber(n), tonumber(per)
      if not n or not per then
        return redis.error_reply(argerr(i + 1, 'rate', "must be 'N/SECONDS' (e.g. '5/1': 5 jobs per second), got " .. shown(v)))
      end
      if n < 1 or n > 1000000 then return redis.error_reply(argerr(i + 1, 'rate', 'N must be a whole number from 1 to 1000000, got ' .. shown(v))) end
      if per < 0.001 or per > 86400 then return redis.error_reply(argerr(i + 1, 'rate', 'SECONDS must be from 0.001 to 86400, got ' .. shown(v))) end
      set[#set + 1] = 'rate-max'; set[#set + 1] = tostring(n)
      set[#set + 1] = 'rate-per'; set[#set + 1] = tostring(per)
      del[#del + 1] = 'rate-tat'
    end
  elseif name == 'max-active' then
    if v == '' then
      del[#del + 1] = 'max-active'
    else
      local n, nerr = req_num(i + 1, 'max-active', 1, 1000000, true)
      if nerr then return redis.error_reply(nerr) end
      set[#set + 1] = 'max-active'; set[#set + 1] = tostring(n)
    end
  else
    return redis.error_reply(argerr(i, 'name', "must be 'rate' or 'max-active', got " .. shown(name)))
  end
end

local changed = false
if #set > 0 then
  local cur = {}
  for i = 1, #set, 2 do cur[#cur + 1] = set[i] end
  local old = redis.call('HMGET', KEYS[11], unpack(cur))
  for i = 1, #cur do if old[i] ~= set[2 * i] then changed = true end end
end
if #del > 0 then
  -- rate-tat alone changes nothing a user set: count the others
  for i = 1, #del do
    if del[i] ~= 'rate-tat' and redis.call('HEXISTS', KEYS[11], del[i]) == 1 then changed = true end
  end
end
if changed then
  if #del > 0 then redis.call('HDEL', KEYS[11], unpack(del)) end
  if #set > 0 then redis.call('HSET', KEYS[11], unpack(set)) end
  flow_mark()
  redis.call('PUBLISH', KEYS[13], ms(now()))
end
local s = redis.call('HMGET', KEYS[11], 'rate-max', 'rate-per', 'max-active', 'paused')
return { 'rate-max', tonumber(s[1]) or 0, 'rate-per', s[2] or '0', 'max-active', tonumber(s[3]) or 0,
         'paused', s[4] and 1 or 0 }
