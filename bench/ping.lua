-- bench/ping.lua: PING round trips per second through jobrt.redis, from one
-- coroutine and from 50 coroutines on one connection, beside redis-benchmark
-- (-c 1, and -c 1 -P 50) measured against the same server in the same run;
-- then the same over TLS (rediss://, a server with --tls-port and a CA made
-- for the run) beside redis-benchmark --tls.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local h = require 'tests.helpers'

local M = {}

local function redis_benchmark(port, n, pipeline, tls)
  local extra = tls and (" --tls --cacert '%s'"):format(tls) or ""
  local cmd = ("redis-benchmark -h 127.0.0.1 -p %d -c 1 -n %d -t ping_mbulk -P %d --csv%s 2>/dev/null")
    :format(port, n, pipeline, extra)
  local f = io.popen(cmd)
  local out = f:read("*a")
  f:close()
  local rps = out:match('"PING_MBULK","([%d%.]+)"')
  return tonumber(rps)
end

-- PING/s from 1 coroutine (n1 calls) and from 50 coroutines (per calls each) on connection r.
local function measure(r, n1, per, conc)
  for _ = 1, 1000 do r:call("PING") end        -- warm up
  local t0 = jobrt.monotime()
  for _ = 1, n1 do r:call("PING") end
  local single = n1 / (jobrt.monotime() - t0)
  local wg = jobrt.waitgroup()
  t0 = jobrt.monotime()
  for _ = 1, conc do wg:spawn(function() for _ = 1, per do r:call("PING") end end) end
  wg:wait()
  return single, per * conc / (jobrt.monotime() - t0)
end

function M.run(server, report)
  local n1, per, conc = 30000, 4000, 50
  local r = assert(redis.connect(server.url))
  local single, multi = measure(r, n1, per, conc)
  r:close()
  local rb1 = redis_benchmark(server.port, n1, 1)
  local rb50 = redis_benchmark(server.port, per * conc, 50)
  report("PING, 1 coroutine (round trips/s)", single, "redis-benchmark -c 1", rb1)
  report("PING, 50 coroutines, 1 connection", multi, "redis-benchmark -c 1 -P 50", rb50)

  -- TLS (skipped by a jobrt that has none)
  local c = h.certs()
  local t = h.start_redis{ tls = "no" }
  local tr, err = redis.connect{ url = t.tls_url, tls_ca = c.ca }
  if not tr then
    io.stdout:write("(TLS skipped: ", tostring(err):sub(1, 80), ")\n")
    t:stop()
    h.cleanup_certs()
    return
  end
  local tsingle, tmulti = measure(tr, n1, per, conc)
  tr:close()
  local trb1 = redis_benchmark(t.tls_port, n1, 1, c.ca)
  local trb50 = redis_benchmark(t.tls_port, per * conc, 50, c.ca)
  report("PING over TLS, 1 coroutine", tsingle, "redis-benchmark --tls -c 1", trb1)
  report("PING over TLS, 50 coroutines, 1 connection", tmulti, "redis-benchmark --tls -c 1 -P 50", trb50)
  report("PING over TLS / plain, 50 coroutines", tmulti, "jobrt plain, same run", multi)
  t:stop()
  h.cleanup_certs()
end

return M
