-- bench/ping.lua: PING round trips per second through jobrt.redis, from one
-- coroutine and from 50 coroutines on one connection, beside redis-benchmark
-- (-c 1, and -c 1 -P 50) measured against the same server in the same run.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'

local M = {}

local function redis_benchmark(port, n, pipeline)
  local cmd = ("redis-benchmark -h 127.0.0.1 -p %d -c 1 -n %d -t ping_mbulk -P %d --csv 2>/dev/null"):format(port, n, pipeline)
  local f = io.popen(cmd)
  local out = f:read("*a")
  f:close()
  local rps = out:match('"PING_MBULK","([%d%.]+)"')
  return tonumber(rps)
end

function M.run(server, report)
  local r = assert(redis.connect(server.url))
  local n1 = 30000
  for _ = 1, 1000 do r:call("PING") end        -- warm up
  local t0 = jobrt.monotime()
  for _ = 1, n1 do r:call("PING") end
  local single = n1 / (jobrt.monotime() - t0)

  local per, conc = 4000, 50
  local wg = jobrt.waitgroup()
  t0 = jobrt.monotime()
  for _ = 1, conc do wg:spawn(function() for _ = 1, per do r:call("PING") end end) end
  wg:wait()
  local multi = per * conc / (jobrt.monotime() - t0)
  r:close()

  local rb1 = redis_benchmark(server.port, n1, 1)
  local rb50 = redis_benchmark(server.port, per * conc, 50)
  report("PING, 1 coroutine (round trips/s)", single, "redis-benchmark -c 1", rb1)
  report("PING, 50 coroutines, 1 connection", multi, "redis-benchmark -c 1 -P 50", rb50)
end

return M
