-- bench/web.lua: `jobrt web` requests per second, measured with wrk (Debian package wrk) against
-- a jobrt web process on the bench's Redis, beside `jobrt enqueue QUEUE JOB -` (the command
-- line's pipelined bulk enqueue) in the same run:
--   POST /api/queues/BW/jobs (one job per request, 50 connections) vs jobs/s of jobrt enqueue -
--   GET /metrics (50 connections)
local jobrt = require 'jobrt'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'

local M = {}

local function wrk(args)
  local cmd = "wrk " .. args .. " 2>&1"
  local f = io.popen(cmd)
  local out = f:read("*a")
  f:close()
  local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  local non2xx = tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
  if not rps then error("wrk gave no figure (is the wrk package installed?): " .. out) end
  if non2xx > 0 then error("wrk: " .. non2xx .. " requests failed: " .. out) end
  return rps
end

function M.run(server, report)
  local q = jobrt.connect(server.url)
  q:queueType("BW", "QUEUE")
  local w = web.start({}, { redis = server.url })
  local base = "http://127.0.0.1:" .. w.port

  -- jobrt enqueue - : N jobs from stdin, pipelined
  local n = 50000
  local dir = h.tmpdir()
  local f = assert(io.open(dir .. "/jobs.txt", "w"))
  for i = 1, n do f:write('{"user":', i, '}\n') end
  f:close()
  local t0 = jobrt.monotime()
  local rc = os.execute(("./jobrt enqueue BW echo - --redis %s < %s/jobs.txt > /dev/null"):format(server.url, dir))
  local cli = n / (jobrt.monotime() - t0)
  assert(rc == 0, "jobrt enqueue failed")
  os.execute("rm -rf '" .. dir .. "'")

  local post = wrk(("-t2 -c50 -d5s -s bench/web_post_wrk.lua %s/api/queues/BW/jobs"):format(base))
  report("POST /api/queues/Q/jobs requests/s (wrk -c50)", post, "jobrt enqueue Q JOB - jobs/s", cli, "req/s")
  local r = h.redis(server.url)
  r:call("DEL", "jobrt:{BW}:wait")           -- a short /metrics whatever POST left behind
  r:close()
  local metrics = wrk(("-t2 -c50 -d5s %s/metrics"):format(base))
  report("GET /metrics requests/s (wrk -c50)", metrics, "jobrt enqueue Q JOB - jobs/s", cli, "req/s")
  w:stop()
  q:close()
end

return M
