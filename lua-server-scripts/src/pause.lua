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
local SCRIPT = 'pause'
--- @include "args"
--- @include "time"
--- @include "flow"

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
