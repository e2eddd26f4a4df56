-- `jobrt web`: pull-style workers over HTTP (reserve / renew / complete / fail / release with a
-- lease token), driven by a Python worker that uses only urllib (issue 15).
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'

local function python(args)
  local argv = { web.python, "tests/07-web/pull_worker.py" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = assert(proc.spawn{ file = web.python, args = argv, capture = true })
  h.spawned[p] = table.concat(argv, " ")
  return p
end

local function lines(p)
  local out = p:output()
  local t = {}
  for l in out:gmatch("[^\n]+") do t[#t + 1] = cjson.decode(l) end
  return t
end

describe("jobrt web pull-style workers", function()
  local w, q, base
  setup(function()
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType("PULL", "QUEUE")
    w = web.start()
    base = "http://127.0.0.1:" .. w.port
  end)
  teardown(function()
    assert.equal(0, w:stop())
    q:close()
  end)
  before_each(function()
    local r = h.redis()
    for _, k in ipairs(r:call("KEYS", "jobrt:{PULL}*")) do r:call("DEL", k) end
    r:close()
  end)

  it("a Python worker processes jobs through reserve, renew, complete and fail", function()
    q:enqueueJob("PULL", "sum", { numbers = { 1, 2, 3 } }, { id = "p-sum" })
    q:enqueueJob("PULL", "echo", { text = "<script>" }, { id = "p-echo" })
    q:enqueueJob("PULL", "fail", {}, { id = "p-fail" })
    local p = python({ base, "PULL", "work", "3" })
    local code = p:wait()
    local _, err = p:output()
    assert.equal(0, code, err)
    assert.equal(3, #lines(p))
    local rec = q:getJob("PULL", "p-sum")
    assert.equal("successful", rec.result)
    assert.same({ sum = 6 }, cjson.decode(rec["result-value"]))
    assert.same({ text = "<script>" }, cjson.decode(q:getJob("PULL", "p-echo")["result-value"]))
    local failed = q:listFailedJobs("PULL")
    assert.equal(1, #failed)
    assert.equal("p-fail", failed[1].id)
    assert.equal("python says no", failed[1]["error-reason"])
    assert.truthy(failed[1]["error-exception"]:find("Traceback", 1, true))
  end)

  it("a Python worker killed mid-job loses its lease; the job comes back to another worker", function()
    q:enqueueJob("PULL", "echo", { n = 1 }, { id = "p-killed" })
    local a = python({ base, "PULL", "hang" })
    h.wait_for(function() return #lines(a) == 1 end, 10, "the first worker to reserve the job")
    assert.same({ id = "p-killed", attempt = 1, outcome = "reserved" }, lines(a)[1])
    a:kill("SIGKILL")
    a:wait()
    local t0 = jobrt.monotime()
    local b = python({ base, "PULL", "work", "1" })
    local code = b:wait()
    assert.equal(0, code, select(2, b:output()))
    assert.same({ id = "p-killed", attempt = 2, outcome = "ok" }, lines(b)[1])
    assert.is_true(jobrt.monotime() - t0 < 8)
    local rec = q:getJob("PULL", "p-killed")
    assert.equal("successful", rec.result)
    assert.equal("2", rec.attempts)
  end)

  it("reserve answers 204 when nothing comes, and a long poll is woken by an enqueue", function()
    local st = web.request(w.port, "POST", "/api/queues/PULL/reserve?wait=0")
    assert.equal(204, st)
    local got
    jobrt.spawn(function()
      got = { web.request(w.port, "POST", "/api/queues/PULL/reserve?wait=20") }
    end)
    jobrt.sleep(0.2)
    local t0 = jobrt.monotime()
    q:enqueueJob("PULL", "echo", { x = 1 }, { id = "p-woken" })
    h.wait_for(function() return got end, 10, "the long poll to answer")
    assert.is_true(jobrt.monotime() - t0 < 1)
    assert.equal(200, got[1])
    local job = got[4]
    assert.equal("p-woken", job.id)
    assert.equal(1, job.attempt)
    -- release gives it back without using an attempt; a second release finds nothing
    local path = "/api/queues/PULL/jobs/p-woken/release"
    local _, _, _, b = web.request(w.port, "POST", path, { body = { lease = job.lease } })
    assert.same({ ok = true, released = 1 }, b)
    assert.equal(1, q:stats("PULL").pending)
  end)

  it("a child of a flow completed over HTTP tells its parent at once (no Lua worker needed)", function()
    q:queueType("PULLP", "QUEUE")
    local id, tree = q:enqueueFlow{ queue = "PULLP", job = "parent", children = { { queue = "PULL", job = "child", args = { n = 1 } } } }
    local st, _, _, job = web.request(w.port, "POST", "/api/queues/PULL/reserve?wait=0")
    assert.equal(200, st)
    assert.equal(tree.children[1].id, job.id)
    local b
    st, _, _, b = web.request(w.port, "POST", "/api/queues/PULL/jobs/" .. job.id .. "/complete",
      { body = { lease = job.lease, result = { n = 10 } } })
    assert.equal(200, st, b and b.error)
    -- by the time complete answered, the news reached the parent: it is queued to run
    local rec = q:getJob("PULLP", id)
    assert.same({ "pending", "0" }, { rec.state, rec["children-left"] })
    assert.equal(1, q:stats("PULLP").pending)
    assert.same({ { queue = "PULL", id = job.id, state = "successful", result = { n = 10 }, ignoreFailure = false, job = "child" } },
      q:getFlow("PULLP", id).children)
  end)

  it("refuses a malformed or foreign lease token, and a lost lease with 409", function()
    q:enqueueJob("PULL", "echo", {}, { id = "p-lease" })
    local _, _, _, job = web.request(w.port, "POST", "/api/queues/PULL/reserve?lease=1")
    assert.equal("p-lease", job.id)
    local st, _, _, b = web.request(w.port, "POST", "/api/queues/PULL/jobs/p-lease/complete", { body = { lease = "garbage" } })
    assert.equal(400, st)
    assert.equal('"lease" must be the lease token that reserve answered', b.error)
    st, _, _, b = web.request(w.port, "POST", "/api/queues/PULL/jobs/other/complete", { body = { lease = job.lease } })
    assert.equal(400, st)
    assert.equal("the lease token belongs to job p-lease, not to job other", b.error)
    -- the lease runs out and the job is taken back: the old token is refused
    h.wait_for(function() return q:stats("PULL").pending == 1 end, 10, "the expired lease to be taken back")
    st, _, _, b = web.request(w.port, "POST", "/api/queues/PULL/jobs/p-lease/complete", { body = { lease = job.lease, result = 1 } })
    assert.equal(409, st)
    assert.truthy(b.error:find("lease lost: job p-lease", 1, true), b.error)
    st = web.request(w.port, "POST", "/api/queues/PULL/jobs/p-lease/renew", { body = { lease = job.lease } })
    assert.equal(409, st)
  end)
  it("a long poll on a paused queue waits for resume without polling, then hands the job out", function()
    q:enqueueJob("PULL", "echo", {}, { id = "p-paused", delay = 0.01 })    -- due at once: a timer's bait
    q:pause("PULL")
    local r = h.redis()
    local function evals()
      return tonumber(r:call("INFO", "commandstats"):match("cmdstat_evalsha:calls=(%d+)")) or 0
    end
    local got
    jobrt.spawn(function() got = { web.request(w.port, "POST", "/api/queues/PULL/reserve?wait=5") } end)
    local before = evals()
    local t0 = jobrt.monotime()
    h.wait_for(function() return jobrt.monotime() - t0 > 0.5 end, 2, "half a second of long poll")
    assert.is_nil(got)
    assert.is_true(evals() - before < 10, (evals() - before) .. " script calls while paused")
    q:resume("PULL")
    h.wait_for(function() return got end, 5, "the job after resume")
    assert.equal(200, got[1])
    assert.equal("p-paused", got[4].id)
    r:close()
  end)
end)
