-- `jobrt web`: the REST API end to end over real HTTP against the suite's Redis (issue 15).
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'

describe("jobrt web API", function()
  local w, q
  setup(function()
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType("ECHO", "QUEUE")
    q:queueType("LB", "LBQUEUE")
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

  describe("POST /api/queues/{Q}/jobs", function()
    it("enqueues a job and answers 201 with its id; the same id again is not a second job", function()
      local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs",
        { body = '{"job":"echo","args":{"n":1796046695261234,"s":"x"},"id":"job-a"}' })
      assert.equal(201, st)
      assert.same({ id = "job-a", existed = false }, b)
      st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs", { body = { job = "echo", id = "job-a" } })
      assert.equal(201, st)
      assert.same({ id = "job-a", existed = true }, b)
      local rec = q:getJob("ECHO", "job-a")
      assert.equal("echo", rec["function"])
      assert.equal('{"n":1796046695261234,"s":"x"}', rec.args)
    end)

    it("enqueues a JSON array in order, and nothing when one item is bad", function()
      local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs",
        { body = '[{"job":"echo","args":{"i":1}},{"job":"echo","args":{"i":2}},{"job":"echo","id":"c"}]' })
      assert.equal(201, st)
      assert.equal(3, #b)
      assert.equal("c", b[3].id)
      assert.equal(3, q:stats("ECHO").pending)
      st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs",
        { body = '[{"job":"echo"},{"job":"echo","priority":"high"}]' })
      assert.equal(400, st)
      assert.equal("jobs[2]: option 'priority' must be a number, got string", b.error)
      assert.equal(3, q:stats("ECHO").pending)
    end)

    local bad = {
      { "not JSON", "{job", 400, "the body is not valid JSON" },
      { "no body", "", 400, "the request needs a JSON body" },
      { "no job name", '{"args":{}}', 400, '"job" must be a job name (a string of 1-256 bytes)' },
      { "an unknown option", '{"job":"echo","colour":"red"}', 400, "unknown option 'colour'" },
      { "a bad delay", '{"job":"echo","delay":-1}', 400, "option 'delay' must be seconds from now" },
      { "a string body", '"echo"', 400, "must be a JSON object" },
    }
    for _, c in ipairs(bad) do
      it("refuses " .. c[1] .. " with " .. c[3] .. " and a message", function()
        local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs", { body = c[2] })
        assert.equal(c[3], st)
        assert.truthy(b.error:find(c[4], 1, true), b.error)
        assert.equal(0, q:stats("ECHO").pending)
      end)
    end

    it("answers 404 for a queue without a type and 400 when options do not fit the type", function()
      local st, _, _, b = web.request(w.port, "POST", "/api/queues/NOPE/jobs", { body = { job = "x" } })
      assert.equal(404, st)
      assert.equal("queue 'NOPE' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type NOPE QUEUE|LBQUEUE|DELQUEUE", b.error)
      st, _, _, b = web.request(w.port, "POST", "/api/queues/LB/jobs", { body = { job = "x" } })
      assert.equal(400, st)
      assert.truthy(b.error:find("is an LBQUEUE: give the option jobHash", 1, true), b.error)
    end)

    it("?wait waits for the result like enqueue --wait, and says when a job failed", function()
      local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url })
      finally(function() p:kill("SIGTERM"); p:wait() end)
      local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs?wait=10",
        { body = { job = "sum", args = { numbers = { 1, 2, 3 } } } })
      assert.equal(201, st)
      assert.equal("successful", b.result)
      assert.same({ sum = 6 }, b.value)
      st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs?wait=10",
        { body = { job = "sum", args = { numbers = { "x" } } } })
      assert.equal(201, st)
      assert.equal("failed", b.result)
      assert.equal("sum: numbers[1] is not a number", b.error)
    end)

    it("?wait answers 504 when the job does not finish in time (the job stays queued)", function()
      local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs?wait=0.2", { body = { job = "echo" } })
      assert.equal(504, st)
      assert.truthy(b.error:find("did not finish within 0.2 s", 1, true), b.error)
      assert.equal(1, q:stats("ECHO").pending)
    end)
  end)

  describe("GET and DELETE /api/queues/{Q}/jobs/{ID}", function()
    it("answer the record, 204 on delete, then 404", function()
      local id = q:enqueueJob("ECHO", "echo", { hi = "<b>x</b>" }, { id = "user 5/é" })
      local path = "/api/queues/ECHO/jobs/user%205%2F%C3%A9"
      local st, _, _, b = web.request(w.port, "GET", path)
      assert.equal(200, st)
      assert.equal(id, b.id)
      assert.same({ hi = "<b>x</b>" }, b.args)
      assert.equal("pending", b.state)
      assert.equal(204, (web.request(w.port, "DELETE", path)))
      st, _, _, b = web.request(w.port, "GET", path)
      assert.equal(404, st)
      assert.equal("no job user 5/é in queue 'ECHO' (finished records expire: successful after 1 hour, failed after 7 days)", b.error)
      assert.equal(404, (web.request(w.port, "DELETE", path)))
    end)
  end)

  describe("GET /api/queues/{Q}/jobs/{ID}/flow", function()
    it("answers the flow the job belongs to, from its root, as a tree (and 404, 400)", function()
      q:queueType("PAGES", "QUEUE")
      local id, tree = q:enqueueFlow{ queue = "ECHO", job = "echo", args = { book = 1 }, children = {
        { queue = "PAGES", job = "render", args = { page = 1 } },
        { queue = "PAGES", job = "render", args = { page = 2 }, children = { { queue = "ECHO", job = "echo" } } } } }
      local st, _, _, b = web.request(w.port, "GET", "/api/queues/PAGES/jobs/" .. tree.children[2].id .. "/flow")
      assert.equal(200, st)
      assert.same({ "ECHO", id, "echo", "pending" }, { b.queue, b.id, b.job, b.state })
      assert.equal(2, #b.children)
      assert.same({ "PAGES", tree.children[1].id, "render", "pending" },
        { b.children[1].queue, b.children[1].id, b.children[1].job, b.children[1].state })
      assert.same({ { queue = "ECHO", id = tree.children[2].children[1].id, job = "echo", state = "pending", children = {} } },
        b.children[2].children)
      -- a bound on the jobs shown
      st, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO/jobs/" .. id .. "/flow?max=2")
      assert.equal(200, st)
      assert.equal(1, #b.children)
      assert.equal(1, b.more)
      assert.equal(404, (web.request(w.port, "GET", "/api/queues/ECHO/jobs/nope/flow")))
      st, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO/jobs/" .. id .. "/flow?max=0")
      assert.equal(400, st)
      assert.equal("query parameter 'max' must be a whole number from 1 to 100000, got '0'", b.error)
    end)
  end)

  describe("stats, queues and workers", function()
    it("GET /api/stats matches jobrt stats --json", function()
      q:enqueueJob("ECHO", "echo", {})
      q:enqueueJob("ECHO", "echo", {}, { delay = 100 })
      local st, _, _, b = web.request(w.port, "GET", "/api/stats")
      assert.equal(200, st)
      local code, out = h.run_jobrt({ "stats", "--json", "--redis", h.url })
      assert.equal(0, code)
      assert.same(cjson.decode(out).queues, b.queues)
      assert.equal(1, b.queues.ECHO.pending)
      assert.equal(1, b.queues.ECHO.delayed)
    end)

    it("GET /api/queues lists every typed queue with its counts; GET /api/queues/{Q} one", function()
      local st, _, _, b = web.request(w.port, "GET", "/api/queues")
      assert.equal(200, st)
      assert.equal("ECHO", b[1].name)
      assert.equal("QUEUE", b[1].type)
      assert.equal("LB", b[2].name)
      st, _, _, b = web.request(w.port, "GET", "/api/queues/LB")
      assert.equal(200, st)
      assert.equal("LBQUEUE", b.type)
      assert.equal(0, b.pending)
    end)

    it("POST /api/queues/{Q}/pause and /resume, and GET /api/queues shows the pause and the limits", function()
      q:limit("ECHO", { rate = 5, per = 2, max_active = 3 })
      local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/pause")
      assert.equal(200, st)
      assert.same({ paused = true, changed = true }, b)
      st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/pause")
      assert.same({ paused = true, changed = false }, b)
      _, _, _, b = web.request(w.port, "GET", "/api/queues")
      assert.same({ 1, 5, 2, 3, 0 }, { b[1].paused, b[1].rate_max, b[1].rate_per, b[1].max_active, b[1].crons })
      assert.same({ rate = 5, per = 2, max_active = 3, paused = true }, q:limit("ECHO"))
      st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/resume")
      assert.equal(200, st)
      assert.same({ paused = false, changed = true }, b)
      _, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO")
      assert.equal(0, b.paused)
      st, _, _, b = web.request(w.port, "POST", "/api/queues/NOPE/pause")
      assert.equal(404, st)
      assert.matches("has no type in RESERVED:QCONFIG", b.error)
      st = web.request(w.port, "GET", "/api/queues/ECHO/pause")
      assert.equal(405, st)
      q:limit("ECHO", { clear = true })
    end)

    it("GET /api/workers lists the workers alive", function()
      local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url, "--concurrency", "3" })
      finally(function() p:kill("SIGTERM"); p:wait() end)
      local b = h.wait_for(function()
        local _, _, _, list = web.request(w.port, "GET", "/api/workers")
        return #list == 1 and list
      end, 10, "the worker in /api/workers")
      assert.equal("ECHO", b[1].queues)
      assert.equal(3, b[1].concurrency)
    end)
  end)

  describe("failed jobs", function()
    it("lists them with reason and traceback, retries them all, deletes them all", function()
      local p = h.spawn_jobrt({ "jobs/echo.lua", "--redis", h.url })
      finally(function() p:kill("SIGTERM"); p:wait() end)
      for i = 1, 2 do q:enqueueJob("ECHO", "sum", { numbers = { "x" } }, { id = "bad-" .. i }) end
      h.wait_for(function() return q:stats("ECHO").failed == 2 end, 10, "two failed jobs")
      local st, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO/failed?count=1")
      assert.equal(200, st)
      assert.equal(2, b.total)
      assert.equal(1, #b.jobs)
      assert.equal("sum: numbers[1] is not a number", b.jobs[1]["error-reason"])
      st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/failed/retry")
      assert.equal(200, st)
      assert.same({ retried = 2 }, b)
      h.wait_for(function() return q:stats("ECHO").failed == 2 and q:stats("ECHO").retried == 0 end, 10, "the retried jobs to fail again")
      st, _, _, b = web.request(w.port, "DELETE", "/api/queues/ECHO/failed")
      assert.equal(200, st)
      assert.same({ deleted = 2 }, b)
      assert.equal(0, q:stats("ECHO").failed)
    end)

    it("refuses a bad count", function()
      local st, _, _, b = web.request(w.port, "GET", "/api/queues/ECHO/failed?count=x")
      assert.equal(400, st)
      assert.equal("query parameter 'count' must be a whole number from 0 to 1000, got 'x'", b.error)
    end)
  end)

  describe("HTTP", function()
    it("answers 404 for an unknown path and 405 with Allow for a wrong method", function()
      local st, _, _, b = web.request(w.port, "GET", "/api/nothing")
      assert.equal(404, st)
      assert.truthy(b.error:find("no such path: /api/nothing", 1, true))
      local hd
      st, hd, _, b = web.request(w.port, "PUT", "/api/queues/ECHO/jobs")
      assert.equal(405, st)
      assert.equal("POST", hd.allow)
      assert.equal("PUT is not allowed on /api/queues/ECHO/jobs (allowed: POST)", b.error)
    end)

    it("serves the dashboard with a Content-Security-Policy, and HEAD without a body", function()
      local st, hd, body = web.request(w.port, "GET", "/")
      assert.equal(200, st)
      assert.truthy(body:find("<title>jobrt</title>", 1, true))
      assert.truthy(hd["content-security-policy"]:find("script-src 'self'", 1, true))
      assert.equal("nosniff", hd["x-content-type-options"])
      local text = web.raw(w.port, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
      local hst, hhd, hbody = web.parse(text)
      assert.equal(200, hst)
      assert.equal(hd["content-length"], hhd["content-length"])
      assert.equal("", hbody)
    end)

    it("keeps a connection alive and answers pipelined requests in order", function()
      local req = "GET /api/queues/ECHO HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
      local text = web.raw(w.port, req .. req .. "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
      local n = 0
      for _ in text:gmatch("HTTP/1%.1 200 OK") do n = n + 1 end
      assert.equal(3, n)
      assert.truthy(text:find('{"ok":true}\n$'))
    end)

    it("answers a malformed request with 400 and closes", function()
      local st, _, body = web.parse(web.raw(w.port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"))
      assert.equal(400, st)
      assert.truthy(body:find('"error"', 1, true))
    end)

    it("answers 431 when the headers are too large", function()
      local st, _, body = web.parse(web.raw(w.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("a"):rep(20000) .. "\r\n\r\n"))
      assert.equal(431, st)
      assert.truthy(body:find("too large", 1, true))
    end)

    it("sends 100 Continue to a client that waits for it before sending its body", function()
      local body = '{"job":"echo"}'
      local c = assert(require('jobrt.core.tcp').connect("127.0.0.1", w.port))
      finally(function() c:close() end)
      assert(c:write("POST /api/queues/ECHO/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" ..
        "Expect: 100-continue\r\nContent-Length: " .. #body .. "\r\n\r\n"))
      assert.equal("HTTP/1.1 100 Continue\r\n\r\n", c:read(5))
      assert(c:write(body))
      local text = ""
      while true do
        local d = c:read(5)
        if not d then break end
        text = text .. d
      end
      assert.equal(201, (web.parse(text)))
    end)
  end)
end)

describe("jobrt web limits", function()
  it("refuses a body over --max-body with 413, and a slow client with 408 after --timeout", function()
    local w = web.start({ "--max-body", "100", "--timeout", "1" })
    finally(function() w:stop() end)
    local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs", { body = { job = "echo", args = { x = ("y"):rep(200) } } })
    assert.equal(413, st)
    assert.equal("request body too large", b.error)
    -- chunked: the limit holds while the body arrives
    local text = web.raw(w.port, "POST /api/queues/ECHO/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "80\r\n" .. ("a"):rep(128) .. "\r\n0\r\n\r\n")
    assert.equal(413, (web.parse(text)))
    local t0 = jobrt.monotime()
    text = web.raw(w.port, "GET / HTTP/1.1\r\nHost: x\r\n", 10)
    assert.equal(408, (web.parse(text)))
    assert.is_true(jobrt.monotime() - t0 < 5)
  end)

  it("answers 503 while Redis cannot be reached, and /metrics says jobrt_up 0", function()
    local w = web.start({}, { redis = "redis://127.0.0.1:1" })
    finally(function() w:stop() end)
    local st, _, _, b = web.request(w.port, "GET", "/api/stats")
    assert.equal(503, st)
    assert.truthy(b.error:find("Redis at 127.0.0.1:1 is not reachable yet", 1, true), b.error)
    local _, _, text = web.request(w.port, "GET", "/metrics")
    assert.truthy(text:find("\njobrt_up 0\n", 1, true))
  end)
end)

describe("jobrt web and a Redis restart", function()
  it("answers 503 while Redis is down and serves again once it is back", function()
    local srv = h.start_redis()
    local w
    finally(function()                     -- busted keeps one finally per test
      if w then w:stop() end
      srv:stop()
    end)
    local r = h.redis(srv.url)
    r:call("HSET", "RESERVED:QCONFIG", "ECHO", "QUEUE")
    r:close()
    w = web.start({}, { redis = srv.url })
    assert.equal(201, (web.request(w.port, "POST", "/api/queues/ECHO/jobs", { body = { job = "echo" } })))
    srv:kill()
    local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs", { body = { job = "echo" } })
    assert.equal(503, st)
    assert.truthy(b.error:find("ECONN", 1, true), b.error)
    srv:restart()
    r = h.redis(srv.url)
    r:call("HSET", "RESERVED:QCONFIG", "ECHO", "QUEUE")
    r:close()
    h.wait_for(function()
      return web.request(w.port, "POST", "/api/queues/ECHO/jobs", { body = { job = "echo" } }) == 201
    end, 10, "jobrt web to enqueue again")
    local _, _, _, stats = web.request(w.port, "GET", "/api/queues/ECHO")
    assert.equal(1, stats.pending)
  end)
end)

describe("jobrt web security", function()
  local TOKEN = "s3cret-token-for-tests"

  local usage = {
    { { "--listen", "foo" }, "jobrt web: --listen: 'foo' is not HOST:PORT (e.g. 127.0.0.1:7070, 0.0.0.0:7070 or [::1]:7070)\n" },
    { { "--listen", "example.com:80" }, "jobrt web: --listen: 'example.com' is not an IP address: give one, e.g. 127.0.0.1:7070 or 0.0.0.0:7070\n" },
    { { "--listen", "127.0.0.1:70000" }, "jobrt web: --listen: '127.0.0.1:70000': the port must be 0-65535\n" },
    { { "--token", "short" }, "jobrt web: --token must be at least 8 characters without spaces or control characters, got 5 characters (e.g. openssl rand -hex 16)\n" },
    { { "extra" }, "jobrt web: unexpected argument 'extra' (see jobrt web --help)\n" },
  }
  for _, c in ipairs(usage) do
    it("is a usage error (2): " .. table.concat(c[1], " "), function()
      local argv = { "web", "--redis", h.url }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local code, _, err = h.run_jobrt(argv)
      assert.equal(2, code)
      assert.equal(c[2], err)
    end)
  end

  it("says so when the port is taken (1)", function()
    local w = web.start()
    finally(function() w:stop() end)
    local code, _, err = h.run_jobrt({ "web", "--redis", h.url, "--listen", "127.0.0.1:" .. w.port })
    assert.equal(1, code)
    assert.equal(("jobrt web: EADDRINUSE: cannot listen on 127.0.0.1:%d: address already in use\n"):format(w.port), err)
  end)

  it("refuses to listen beyond loopback without a token", function()
    local code, _, err = h.run_jobrt({ "web", "--listen", "0.0.0.0:0", "--redis", h.url })
    assert.equal(2, code)
    assert.equal("jobrt web: listening on 0.0.0.0 would expose the API to the network without a password: give --token TOKEN (or set JOBRT_WEB_TOKEN), or listen on 127.0.0.1\n", err)
  end)

  it("with a token, needs Bearer auth on the API and /metrics; the dashboard page itself is public", function()
    local w = web.start({}, { env = { JOBRT_WEB_TOKEN = TOKEN } })
    finally(function() w:stop() end)
    local st, hd, _, b = web.request(w.port, "GET", "/api/stats")
    assert.equal(401, st)
    assert.equal('Bearer realm="jobrt"', hd["www-authenticate"])
    assert.truthy(b.error:find("Authorization: Bearer TOKEN", 1, true))
    assert.equal(401, (web.request(w.port, "GET", "/metrics")))
    assert.equal(401, (web.request(w.port, "GET", "/api/stats", { headers = { Authorization = "Bearer wrong-token-123" } })))
    assert.equal(200, (web.request(w.port, "GET", "/api/stats", { headers = { Authorization = "Bearer " .. TOKEN } })))
    assert.equal(200, (web.request(w.port, "GET", "/metrics", { headers = { Authorization = "Bearer " .. TOKEN } })))
    assert.equal(200, (web.request(w.port, "GET", "/")))
    local _, _, _, s = web.request(w.port, "GET", "/api/session")
    assert.same({ token_required = true, signed_in = false }, s)
  end)

  it("the dashboard's login sets an HttpOnly, SameSite=Strict cookie that opens the API", function()
    local w = web.start({ "--token", TOKEN })
    finally(function() w:stop() end)
    assert.equal(401, (web.request(w.port, "POST", "/api/login", { body = { token = "nope-nope-nope" } })))
    local st, hd = web.request(w.port, "POST", "/api/login", { body = { token = TOKEN } })
    assert.equal(200, st)
    local cookie = hd["set-cookie"]
    assert.truthy(cookie:find("; HttpOnly", 1, true))
    assert.truthy(cookie:find("; SameSite=Strict", 1, true))
    local pair = cookie:match("^([^;]+)")
    assert.equal(200, (web.request(w.port, "GET", "/api/stats", { headers = { Cookie = pair } })))
    assert.equal(401, (web.request(w.port, "GET", "/api/stats", { headers = { Cookie = "jobrt_session=forged" } })))
  end)

  it("refuses mutating requests from another Origin, and foreign Host names without a token", function()
    local w = web.start()
    finally(function() w:stop() end)
    local st, _, _, b = web.request(w.port, "POST", "/api/queues/ECHO/jobs",
      { body = { job = "echo" }, headers = { Origin = "http://evil.example" } })
    assert.equal(403, st)
    assert.truthy(b.error:find("Origin 'http://evil.example' is not this server's", 1, true))
    st = web.request(w.port, "POST", "/api/queues/ECHO/jobs",
      { body = { job = "echo" }, headers = { Origin = "http://127.0.0.1:" .. w.port } })
    assert.equal(201, st)
    st, _, _, b = web.request(w.port, "GET", "/api/stats", { host = "evil.example:" .. w.port })
    assert.equal(403, st)
    assert.truthy(b.error:find("is not a loopback name", 1, true))
  end)
end)
