-- bench/worker.lua: the worker's figures, each beside a baseline measured in the same run.
--   * jobs/s: 50k no-op jobs, one worker process, concurrency 50 (baseline: PING round
--     trips/s of redis-benchmark -c 1 on the same server);
--   * enqueue -> start latency with an idle worker, p50 / p99 (baseline: PING round trip);
--   * DELQUEUE lateness (start - due), p50 / p99 (baseline: PING round trip).
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'

local M = {}

local function pct(t, p)
  table.sort(t)
  return t[math.max(1, math.ceil(#t * p))]
end

local function ping_rtts(r, n)
  local t = {}
  for i = 1, n do
    local t0 = jobrt.monotime()
    r:call("PING")
    t[i] = (jobrt.monotime() - t0) * 1000
  end
  return t
end

local function start_worker(url, extra)
  local a = { "work", "bench/jobs", "--redis", url, "--log-level", "warn" }
  for _, x in ipairs(extra or {}) do a[#a + 1] = x end
  local p = h.spawn_jobrt(a, { capture = false })
  local r = h.redis(url)
  h.wait_for(function() return r:call("ZCARD", "jobrt:{workers}") > 0 end, 10, "the bench worker")
  r:close()
  return p
end

local function stop(p) p:kill("SIGTERM"); p:wait() end

function M.run(server, report)
  local r = h.redis(server.url)
  r:call("FLUSHALL")
  local o = assert(ops_mod.new(r))
  assert(o:set_queue_type("BENCH", "QUEUE"))
  assert(o:set_queue_type("BENCHDEL", "DELQUEUE"))

  -- Baselines
  local f = io.popen(("redis-benchmark -h 127.0.0.1 -p %d -c 1 -n 20000 -t ping_mbulk --csv 2>/dev/null"):format(server.port))
  local ping_rps = tonumber((f:read("*a")):match('"PING_MBULK","([%d%.]+)"'))
  f:close()
  local rtt = ping_rtts(r, 2000)
  local rtt50, rtt99 = pct(rtt, 0.5), pct(rtt, 0.99)

  -- Throughput
  local N = tonumber(os.getenv("BENCH_JOBS")) or 50000
  local wg = jobrt.waitgroup()
  for c = 1, 50 do
    wg:spawn(function() for _ = c, N, 50 do assert(o:enqueue("BENCH", "noop", "{}", {})) end end)
  end
  wg:wait()
  r:call("CONFIG", "RESETSTAT")
  local p = start_worker(server.url, { "--concurrency", "50" })
  local t0 = jobrt.monotime()
  h.wait_for(function() return o:stats("BENCH").completed >= N end, 300, "the bench jobs")
  local secs = jobrt.monotime() - t0
  local info = r:call("INFO", "commandstats")
  local cmds = 0
  for calls in info:gmatch("calls=(%d+)") do cmds = cmds + tonumber(calls) end
  report(("jobs/s, %d no-op jobs, 1 process, conc. 50"):format(N), N / secs,
    "PING/s redis-benchmark -c 1", ping_rps, "jobs/s")
  report("Redis commands per job processed (reserve+complete)", cmds / N, "BullMQ (reference, not run)", 23)

  -- Latency: enqueue -> start, idle worker
  local lat = {}
  for i = 1, 1000 do
    local t = jobrt.now()
    local id = assert(o:enqueue("BENCH", "stamp", "{}", {}))
    local rec
    repeat
      rec = o:get("BENCH", id)
    until rec and rec.state == "finished"
    lat[i] = (tonumber(rec["result-value"]) - t) * 1000
  end
  report("enqueue->start latency p50 (ms)", pct(lat, 0.5), "PING round trip p50 (ms)", rtt50, "ms")
  report("enqueue->start latency p99 (ms)", pct(lat, 0.99), "PING round trip p99 (ms)", rtt99, "ms")

  -- DELQUEUE lateness
  local now = jobrt.now()
  local ids = {}
  for i = 1, 500 do
    local due = now + 0.5 + (i % 100) * 0.02
    ids[i] = assert(o:enqueue("BENCHDEL", "late", cjson.encode({ due = due, n = i }), { timestamp = due }))
  end
  h.wait_for(function() return o:stats("BENCHDEL").completed >= 500 end, 30, "the delayed jobs")
  local late = {}
  for i, id in ipairs(ids) do late[i] = tonumber(o:get("BENCHDEL", id)["result-value"]) * 1000 end
  report("DELQUEUE lateness p50 (ms)", pct(late, 0.5), "PING round trip p50 (ms)", rtt50, "ms")
  report("DELQUEUE lateness p99 (ms)", pct(late, 0.99), "PING round trip p99 (ms)", rtt99, "ms")
  stop(p)
  r:close()
end

return M
