-- `jobrt web`: /metrics in the Prometheus text format, parsed by prometheus_client's parser
-- (python3-prometheus-client) with extra checks; run times come from the workers through Redis.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'

-- Parses exposition text; returns the families, or nil and the parser's complaint.
local function parse(text)
  local dir = h.tmpdir()
  local f = assert(io.open(dir .. "/m.txt", "wb"))
  f:write(text)
  f:close()
  local p = assert(proc.spawn{ file = "/bin/sh", args = { "/bin/sh", "-c",
    web.python .. " tests/07-web/parse_metrics.py < " .. dir .. "/m.txt" }, capture = true })
  local code = p:wait()
  local out, err = p:output()
  os.execute("rm -rf '" .. dir .. "'")
  if code ~= 0 then return nil, err end
  return cjson.decode(out)
end

local function sample(fams, fam, name, labels)
  for _, s in ipairs(fams[fam].samples) do
    local match = s[1] == name
    for k, v in pairs(labels) do if s[2][k] ~= v then match = false end end
    if match then return s[3] end
  end
end

describe("jobrt web /metrics", function()
  local w, q
  setup(function()
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType("ECHO", "QUEUE")
    q:queueType('odd.name:v2-q', "QUEUE")
    w = web.start()
  end)
  teardown(function()
    assert.equal(0, w:stop())
    q:close()
  end)

  it("the strict parser refuses broken text (so the next test can fail)", function()
    assert.is_nil((parse("# TYPE x counter\nx_total{a=\"1} 1\n")))
    assert.is_nil((parse("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n")))
  end)

  it("counts completed and failed jobs, gauges per state, and the workers' run-time histogram", function()
    local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url })
    finally(function() p:kill("SIGTERM"); p:wait() end)
    for i = 1, 3 do q:run("ECHO", "sum", { numbers = { i } }, { wait = 10 }) end
    pcall(q.run, q, "ECHO", "sum", { numbers = { "x" } }, { wait = 10 })
    q:enqueueJob("ECHO", "echo", {}, { delay = 600 })
    q:enqueueJob('odd.name:v2-q', "echo", {})
    -- the workers write their run times right after each complete
    h.wait_for(function()
      local r = h.redis()
      local n = tonumber(r:call("HGET", "jobrt:{ECHO}:metrics", "count"))
      r:close()
      return n == 4
    end, 10, "the worker's run-time counts")
    local st, hd, text = web.request(w.port, "GET", "/metrics")
    assert.equal(200, st)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", hd["content-type"])
    local fams, err = parse(text)
    assert.is_not_nil(fams, err)
    assert.equal("counter", fams.jobrt_jobs_completed.type)
    assert.equal(3, sample(fams, "jobrt_jobs_completed", "jobrt_jobs_completed_total", { queue = "ECHO" }))
    assert.equal(1, sample(fams, "jobrt_jobs_failed", "jobrt_jobs_failed_total", { queue = "ECHO" }))
    assert.equal("gauge", fams.jobrt_queue_jobs.type)
    assert.equal(1, sample(fams, "jobrt_queue_jobs", "jobrt_queue_jobs", { queue = "ECHO", state = "delayed" }))
    assert.equal(1, sample(fams, "jobrt_queue_jobs", "jobrt_queue_jobs", { queue = "ECHO", state = "failed" }))
    assert.equal(1, sample(fams, "jobrt_queue_jobs", "jobrt_queue_jobs", { queue = 'odd.name:v2-q', state = "waiting" }))
    assert.equal("histogram", fams.jobrt_job_duration_seconds.type)
    assert.equal(4, sample(fams, "jobrt_job_duration_seconds", "jobrt_job_duration_seconds_count", { queue = "ECHO" }))
    assert.equal(4, sample(fams, "jobrt_job_duration_seconds", "jobrt_job_duration_seconds_bucket", { queue = "ECHO", le = "+Inf" }))
    assert.is_true(sample(fams, "jobrt_job_duration_seconds", "jobrt_job_duration_seconds_sum", { queue = "ECHO" }) >= 0)
    assert.equal(1, sample(fams, "jobrt_workers", "jobrt_workers", {}))
    assert.equal(1, sample(fams, "jobrt_up", "jobrt_up", {}))
    local rtt = sample(fams, "jobrt_redis_roundtrip_seconds", "jobrt_redis_roundtrip_seconds", {})
    assert.is_true(rtt > 0 and rtt < 1)
  end)

  it("/api/history has this minute's completed and failed counts for the chart", function()
    local _, _, _, b = web.request(w.port, "GET", "/api/history?minutes=5")
    assert.equal(5, #b.minutes)
    local c, f = 0, 0
    for i = 1, 5 do c, f = c + b.completed[i], f + b.failed[i] end
    assert.equal(3, c)
    assert.equal(1, f)
    assert.equal(3, b.queues.ECHO.completed[5] + b.queues.ECHO.completed[4])
    local st, _, _, e = web.request(w.port, "GET", "/api/history?minutes=500")
    assert.equal(400, st)
    assert.equal("query parameter 'minutes' must be a whole number from 1 to 120", e.error)
  end)
end)
