-- `jobrt web` as a new user meets it: bad names, ids and job names in every route are a 400 that
-- names the field (never a 500 with an internal function's name, never a write to Redis); job
-- records and worker entries come back as JSON values, as `jobrt job` shows them; a standalone
-- `jobrt web` finds the directory's private Redis like every other command; a bad
-- JOBRT_WEB_TOKEN is called by its name.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'

describe("jobrt web API input", function()
  local w, q
  setup(function()
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType("ECHO", "QUEUE")
    w = web.start()
  end)
  teardown(function()
    assert.equal(0, w:stop())
    q:close()
  end)
  before_each(function()
    local r = h.redis()
    for _, k in ipairs(r:call("KEYS", "jobrt:{*")) do r:call("DEL", k) end
    r:close()
  end)

  local LONG = string.rep("q", 129)
  local bad = {
    { "POST", "/api/queues/BAD%20Q/jobs", '{"job":"echo"}', "the queue name may use only A-Z a-z 0-9 _ . : -" },
    { "POST", "/api/queues/" .. LONG .. "/jobs", '{"job":"echo"}', "the queue name must be at most 128 bytes" },
    { "GET", "/api/queues/BAD%20Q/jobs/1", nil, "the queue name may use only" },
    { "DELETE", "/api/queues/BAD%20Q/jobs/1", nil, "the queue name may use only" },
    { "GET", "/api/queues/BAD%20Q/jobs/1/flow", nil, "the queue name may use only" },
    { "GET", "/api/queues/BAD%20Q", nil, "the queue name may use only" },
    { "GET", "/api/queues/BAD%20Q/failed", nil, "the queue name may use only" },
    { "POST", "/api/queues/BAD%20Q/failed/retry", nil, "the queue name may use only" },
    { "POST", "/api/queues/BAD%20Q/failed/x/retry", nil, "the queue name may use only" },
    { "DELETE", "/api/queues/BAD%20Q/failed", nil, "the queue name may use only" },
    { "POST", "/api/queues/BAD%20Q/pause", nil, "the queue name may use only" },
    { "POST", "/api/queues/BAD%20Q/resume", nil, "the queue name may use only" },
    { "POST", "/api/queues/BAD%20Q/reserve", nil, "the queue name may use only" },
    { "POST", "/api/queues/ECHO/failed/x%7Dy/retry", nil, "the job id must not contain control characters" },
    { "GET", "/api/queues/ECHO/jobs/x%0Ay", nil, "the job id must not contain control characters" },
    { "DELETE", "/api/queues/ECHO/jobs/x%7By", nil, "the job id must not contain control characters" },
    { "POST", "/api/queues/ECHO/jobs", '{"job":"a{b"}', "the job name must not contain control characters" },
    { "POST", "/api/queues/ECHO/jobs", '{"job":"_y"}', "job names must not start with '_' ('_y')" },
    { "POST", "/api/queues/ECHO/jobs?wait=1", '{"job":"_y"}', "job names must not start with '_'" },
    { "POST", "/api/queues/ECHO/jobs", '[{"job":"echo"},{"job":"_y"}]', "jobs[2]: job names must not start with '_'" },
    { "POST", "/api/queues/ECHO/jobs", '[{"job":"echo"},{"job":"x\\u0001"}]', "jobs[2]: the job name must not contain" },
    { "POST", "/api/queues/ECHO/jobs", '{"job":"echo","id":"a}b"}', "option 'id' must not contain" },
  }
  for _, c in ipairs(bad) do
    it(("answers 400 naming the field, and writes nothing: %s %s %s"):format(c[1], c[2]:sub(1, 60), c[3] or ""), function()
      local st, _, raw, b = web.request(w.port, c[1], c[2], { body = c[3] })
      assert.equal(400, st, raw)
      assert.truthy(b.error:find(c[4], 1, true), b.error)
      local r = h.redis()
      local keys = r:call("KEYS", "jobrt:{*")
      r:close()
      assert.same({}, keys)
      assert.equal(0, q:stats("ECHO").pending)
    end)
  end

  it("pull-worker calls answer 400 for a bad job id or a forged lease token, not 500", function()
    local pull = require 'jobrt.web.pull'
    for _, verb in ipairs({ "renew", "complete", "fail", "release" }) do
      local st, _, raw, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs/x%7Dy/" .. verb,
        { body = { lease = pull.token("http:a:00", 1, "x}y") } })
      assert.equal(400, st, raw)
      assert.truthy(b.error:find("the job id must not contain", 1, true), b.error)
      st, _, raw, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs/j-1/" .. verb,
        { body = { lease = pull.token("w{x}\1", 1, "j-1") } })
      assert.equal(400, st, raw)
      assert.equal('"lease" must be the lease token that reserve answered', b.error)
    end
  end)

  it("GET a job answers args and result-value as JSON values, as jobrt job does", function()
    local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url })
    finally(function() p:kill("SIGTERM"); p:wait() end)
    q:enqueueJob("ECHO", "sum", { numbers = { 1, 2, 3 } }, { id = "sum-1" })
    h.wait_for(function() local r = q:getJob("ECHO", "sum-1"); return r and r.result end, 10, "the job to finish")
    local st, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO/jobs/sum-1")
    assert.equal(200, st)
    assert.same({ numbers = { 1, 2, 3 } }, b.args)
    assert.same({ sum = 6 }, b["result-value"])
    local code, out = h.run_jobrt({ "job", "ECHO", "sum-1", "--redis", h.url })
    assert.equal(0, code)
    local cli = cjson.decode(out)
    assert.same(cli.args, b.args)
    assert.same(cli["result-value"], b["result-value"])
  end)

  it("the failed list answers args as JSON values", function()
    local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url })
    finally(function() p:kill("SIGTERM"); p:wait() end)
    q:enqueueJob("ECHO", "sum", { numbers = { "x" } }, { id = "bad-1" })
    h.wait_for(function() return q:stats("ECHO").failed == 1 end, 10, "the failed job")
    local st, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO/failed")
    assert.equal(200, st)
    assert.equal("bad-1", b.jobs[1].id)
    assert.same({ numbers = { "x" } }, b.jobs[1].args)
  end)

  it("GET /api/workers and /api/stats answer the workers' numbers as numbers", function()
    local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url, "--concurrency", "3" })
    finally(function() p:kill("SIGTERM"); p:wait() end)
    local list = h.wait_for(function()
      local _, _, _, l = web.request(w.port, "GET", "/api/workers")
      return #l == 1 and l
    end, 10, "the worker in /api/workers")
    local _, _, _, st = web.request(w.port, "GET", "/api/stats")
    for _, wk in ipairs({ list[1], st.workers[1] }) do
      assert.equal(3, wk.concurrency)
      for _, f in ipairs({ "pid", "started", "heartbeat", "done", "failed", "inflight" }) do
        assert.equal("number", type(wk[f]), f)
      end
      assert.equal("ECHO", wk.queues)
    end
  end)
end)

describe("jobrt web configuration", function()
  it("names JOBRT_WEB_TOKEN when the token from the environment is too short", function()
    local code, _, err = h.run_jobrt({ "web", "--redis", h.url }, { env = { JOBRT_WEB_TOKEN = "short" } })
    assert.equal(2, code)
    assert.equal("jobrt web: JOBRT_WEB_TOKEN must be at least 8 characters without spaces or control characters, got 5 characters (e.g. openssl rand -hex 16)\n", err)
  end)

  it("without --redis or JOBRT_REDIS uses the directory's private Redis (./.jobrt/redis.sock)", function()
    local dir = h.tmpdir()
    assert(os.execute("mkdir -m 700 '" .. dir .. "/.jobrt'") == 0)
    local sock = dir .. "/.jobrt/redis.sock"
    local srv = h.start_redis{ args = { "--unixsocket", sock, "--unixsocketperm", "700" } }
    local p
    finally(function()
      if p then p:kill("SIGTERM"); p:wait() end
      srv:stop()
      os.execute("rm -rf '" .. dir .. "'")
    end)
    local qp = jobrt.connect("unix://" .. sock)
    qp:queueType("PRIV", "QUEUE")
    qp:close()
    p = h.spawn_jobrt({ "web", "--listen", "127.0.0.1:0" }, { cwd = dir, env = { JOBRT_REDIS = false, PWD = dir } })
    local port = h.wait_for(function()
      if p:exited() then error("jobrt web exited: " .. tostring(select(2, p:output()))) end
      return tonumber(select(2, p:output()):match("serving http://127%.0%.0%.1:(%d+)/"))
    end, 10, "jobrt web to listen")
    local st, _, raw, b = web.request(port, "GET", "/api/queues")
    assert.equal(200, st, raw)
    assert.equal("PRIV", b[1].name)
    st, _, raw = web.request(port, "POST", "/api/queues/PRIV/jobs", { body = '{"job":"echo","id":"p-1"}' })
    assert.equal(201, st, raw)
    local _, err = p:output()
    assert.falsy(err:find("6379", 1, true), err)
  end)
end)
