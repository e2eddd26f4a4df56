-- Server time, and the enqueue order of a job.
-- now() -> milliseconds (number), decimal seconds with microseconds (string), microseconds
local function now()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  -- string padding, not string.format: sprintf costs Redis' Lua more than the rest of this
  return s * 1000 + math.floor(us / 1000), t[1] .. '.' .. ('00000' .. t[2]):sub(-6), s * 1000000 + us
end
local function ms(n) return string.format('%.0f', n) end
-- The enqueue order of a job: its pending-created time ('1763841706.123456') as 16 digits of
-- microseconds, so that entries with equal scores sort first in, first out ('0000000000000000'
-- for a hand-written record without one).
local function order_of(created)
  local s, us = tostring(created):match('^(%d+)%.(%d%d%d%d%d%d)$')
  if not s then return '0000000000000000' end
  if #s <= 10 then return ('000000000' .. s):sub(-10) .. us end
  return string.format('%010d', tonumber(s)) .. us
end
