--[[ flow_take.lua: take entries of a queue's flow outbox to carry them over (README "Flows").

KEYS: the 14 standard keys of queue Q, in order (README "Keys"), then its 4 flow keys
  [15] jobrt:{Q}:flow [16] jobrt:{Q}:flow:out [17] jobrt:{Q}:flow:waiting [18] jobrt:{Q}:children:
ARGV ('' = default):
  [1] type     QUEUE | LBQUEUE | DELQUEUE
  [2] limit    whole number 1..1000 of entries taken; '' = 100
  [3] horizon  ms (0..86400000): take the entries held until now + horizon at the latest. A
               script that wrote entries holds them 5000 ms for its caller: that caller takes
               them with horizon 5000; any other worker of Q takes what is overdue (horizon 0)
               when the time named by "flow:<ms>" on the wake channel (or in next) has come.
               '' = 0
  [4] hold     ms (1..86400000) the taken entries are held for this caller: nobody else takes
               them before (unless it asks with a horizon that reaches that far); if it does
               not acknowledge them by then (it died), they are taken again. '' = 15000
Returns: { now, next, entries }: now the server time (Unix ms); next the earliest time (Unix
  ms) at which an entry left in the outbox may be taken (nil: none left: arm a timer for it);
  entries an array of { key, text, stamp } in order of their time: deliver each with
  flow_deliver to the queue it is for (c:<queue>|<id> and d:<queue>|<id>: that queue; u:<id>:
  the parent queue, the third line of the text), then acknowledge them with flow_ack and the
  stamps. An entry whose text is missing is dropped.
]]
local SCRIPT = 'flow_take'
--- @include "args"
--- @include "time"
--- @include "flows"

local qname, err = check_keys(FLOW_KEYS)
if not qname then return redis.error_reply(err) end
err = max_argv(4); if err then return redis.error_reply(err) end
local qtype, limit, horizon, hold
qtype, err = queue_type(); if err then return redis.error_reply(err) end
limit, err = opt_num(2, 'limit', 1, 1000, true, 100); if err then return redis.error_reply(err) end
horizon, err = opt_num(3, 'horizon', 0, 86400000, true, 0); if err then return redis.error_reply(err) end
hold, err = opt_num(4, 'hold', 1, 86400000, true, 15000); if err then return redis.error_reply(err) end

local now_ms = now()
local keys = redis.call('ZRANGEBYSCORE', KEYS[16], '-inf', now_ms + horizon, 'LIMIT', 0, limit)
local out, held, lost = {}, {}, {}
for i = 1, #keys do
  local text = redis.call('HGET', KEYS[15], keys[i])
  if text then
    out[#out + 1] = { keys[i], text, flow_stamp(keys[i], text) }
    held[#held + 1] = now_ms + hold
    held[#held + 1] = keys[i]
  else
    lost[#lost + 1] = keys[i]
  end
end
if #held > 0 then redis.call('ZADD', KEYS[16], unpack(held)) end
if #lost > 0 then redis.call('ZREM', KEYS[16], unpack(lost)) end
local nx = redis.call('ZRANGE', KEYS[16], 0, 0, 'WITHSCORES')
return { now_ms, nx[2] and tonumber(nx[2]) or false, out }
