-- Leases with identity (issue 8): each numbered failure of the issue, reproduced against real
-- workers and a real redis-server. Handlers append to a ledger list (through job.redis), so the
-- order of everything they did is the order of the list.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local worker_mod = require 'jobrt.worker'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

local LEDGER = [[
local jobrt = require 'jobrt'
-- one ledger entry: "<queue>:<id>:<attempt>:<what>"
local function ledger(job, what)
  job.redis:call("RPUSH", "test:ledger", job.queue .. ":" .. job.id .. ":" .. job.attempt .. ":" .. what)
end
-- runs for `secs`, writing a "tick" every 0.1 s (each a yield, and a side effect)
local function ticking(job, secs)
  ledger(job, "start")
  for _ = 1, math.floor(secs * 10) do
    jobrt.sleep(0.1)
    ledger(job, "tick")
  end
  ledger(job, "end")
  return job.queue .. " " .. job.id .. " attempt " .. job.attempt
end
]]

describe("leases with identity", function()
  local r, o
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
  end)
  after_each(function() r:close() end)

  -- the ledger as a list of { queue, id, attempt (number), what }
  local function ledger()
    local out = {}
    for i, e in ipairs(r:call("LRANGE", "test:ledger", 0, -1)) do
      local q, id, a, what = e:match("^([^:]+):(.+):(%d+):(%a+)$")
      out[i] = { q = q, id = id, a = tonumber(a), what = what }
    end
    return out
  end

  -- no entry of an earlier attempt of (queue, id) after the first entry of a later one
  local function assert_no_overlap(q, id)
    local newest = 0
    for i, e in ipairs(ledger()) do
      if e.q == q and e.id == id then
        assert.is_true(e.a >= newest, ("ledger entry %d: attempt %d of %s %s wrote after attempt %d had started"):format(
          i, e.a, q, id, newest))
        if e.a > newest then newest = e.a end
      end
    end
    return newest
  end

  local function count(q, id, what, attempt)
    local n = 0
    for _, e in ipairs(ledger()) do
      if e.q == q and e.id == id and e.what == what and (attempt == nil or e.a == attempt) then n = n + 1 end
    end
    return n
  end

  describe("1. jobs of different queues with equal ids", function()
    local dir
    setup(function()
      dir = ws.jobs_dir{ ["ab.lua"] = LEDGER .. [[
return {
  A = { slow = function(args, job) return ticking(job, args.s or 3) end },
  B = { slow = function(args, job) return ticking(job, args.s or 3) end },
} ]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    it("renews, runs and stores each queue's job 1 on its own", function()
      assert(o:set_queue_type("A", "QUEUE"))
      assert(o:set_queue_type("B", "QUEUE"))
      local p = ws.start_worker(dir, { "--lease", "1", "--concurrency", "4" })
      local a = ws.enqueue(o, "A", "slow")
      local b = ws.enqueue(o, "B", "slow")
      assert.equal(a, b)           -- generated ids restart at 1 in every queue
      h.wait_for(function()
        return ws.state_of(o, "A", a) == "finished" and ws.state_of(o, "B", b) == "finished"
      end, 15, "both jobs")
      ws.stop_worker(p)
      for _, q in ipairs({ "A", "B" }) do
        local rec = o:get(q, a)
        assert.same({ "successful", "1", '"' .. q .. " " .. a .. ' attempt 1"' },
          { rec.result, rec.attempts, rec["result-value"] }, q)
        assert.equal(1, count(q, a, "start"), q .. " ran more than once")
        assert.equal(1, count(q, a, "end"), q)
      end
    end)

    it("deleting A's job stops A's job only", function()
      assert(o:set_queue_type("A", "QUEUE"))
      assert(o:set_queue_type("B", "QUEUE"))
      local p = ws.start_worker(dir, { "--concurrency", "4" })
      local a = ws.enqueue(o, "A", "slow", { s = 1.5 })
      local b = ws.enqueue(o, "B", "slow", { s = 1.5 })
      h.wait_for(function() return count("A", a, "start") == 1 and count("B", b, "start") == 1 end, 5, "both to start")
      assert.is_true(o:delete("A", a))
      h.wait_for(function() return ws.state_of(o, "B", b) == "finished" end, 10, "B's job")
      h.wait_for(function() return r:call("EXISTS", "jobrt:{A}:job:" .. a) == 0 end, 5, "A's job to be gone")
      ws.stop_worker(p)
      assert.equal("successful", o:get("B", b).result)
      assert.equal(1, count("B", b, "end"))
      assert.equal(0, count("A", a, "end"))
    end)
  end)

  describe("2. a late outcome of an earlier attempt", function()
    it("is refused against the next attempt's lease, and the jobHash stays held", function()
      assert(o:set_queue_type("lb", "LBQUEUE"))
      local id = ws.enqueue(o, "lb", "f", {}, { jobHash = "h" })
      assert.equal(1, o:reserve("lb", "w", 1, 0.05).jobs[1].attempt)
      h.wait_for(function() return o:requeue_expired("lb") > 0 end, 3, "the lease to run out")
      local res = o:reserve("lb", "w", 1, 10, true)
      assert.same({ id, 2 }, { res.jobs[1].id, res.jobs[1].attempt })
      -- the same worker's queued outcome of attempt 1 arrives now
      local sum = o:complete("lb", "w", { { id = id, attempt = 1, ok = true, value = '"late"' } })
      assert.same({ 0, { id } }, { sum.completed, sum.ignored })
      assert.equal("executing", o:get("lb", id).state)
      assert.equal(id, r:call("HGET", "jobrt:{lb}:lb:running", "h"))
      -- an identical job waits: attempt 2 still holds the jobHash
      local twin = ws.enqueue(o, "lb", "f", {}, { jobHash = "h" })
      assert.same({}, o:reserve("lb", "w2", 10, 10).jobs)
      assert.equal(1, o:complete("lb", "w", { { id = id, attempt = 2, ok = true, value = '"mine"' } }).completed)
      assert.equal('"mine"', o:get("lb", id)["result-value"])
      assert.equal(twin, o:reserve("lb", "w2", 10, 10).jobs[1].id)
    end)

    it("a renewal or release of an earlier attempt finds nothing", function()
      assert(o:set_queue_type("q", "QUEUE"))
      local id = ws.enqueue(o, "q", "f")
      o:reserve("q", "w", 1, 0.05)
      h.wait_for(function() return o:requeue_expired("q") > 0 end, 3, "the lease to run out")
      o:reserve("q", "w", 1, 10, true)
      assert.same({ { id = id, attempt = 1 } }, o:renew("q", "w", { { id = id, attempt = 1 } }, 10))
      assert.equal(0, o:release("q", "w", { { id = id, attempt = 1 } }))
      assert.equal("executing", o:get("q", id).state)
      assert.same({}, o:renew("q", "w", { { id = id, attempt = 2 } }, 10))
    end)
  end)

  describe("3. one worker process", function()
    local w
    -- fault injection into this process's own worker (calls still go to the real Redis)
    local inject_for, restore = ws.injector()
    local function inject(name, wrap) inject_for(name, wrap, w) end
    after_each(function()
      if w then w:stop(0); w = nil end
      restore()
    end)

    local function serve(jobs, opts)
      local conf = { redis = h.url, jobs = jobs, concurrency = opts.concurrency or 2, lease = opts.lease or 1,
                     log_jobs = false, name = "spec" }
      w = assert(worker_mod.new(conf))
      return w
    end

    it("does not start jobs from a reserve reply read after more than half the lease", function()
      assert(o:set_queue_type("STALE", "QUEUE"))
      local started = {}
      local jobs = { STALE = { f = function(_, job) started[#started + 1] = job.attempt; return "ran" end } }
      local id = ws.enqueue(o, "STALE", "f")
      w = serve(jobs, { lease = 1 })
      -- the process stalls (as under SIGSTOP) right after its first reserve reply came in
      local stalled = false
      inject("reserve", function(real, self, ...)
        local res, err = real(self, ...)
        if not stalled and res and #res.jobs > 0 then
          stalled = true
          os.execute("sleep 0.8")
        end
        return res, err
      end)
      assert(w:start())
      h.wait_for(function() return ws.state_of(o, "STALE", id) == "finished" end, 10, "the job")
      assert.is_true(stalled)
      assert.same({ 2 }, started)        -- attempt 1 was handed back unstarted
      assert.equal('"ran"', o:get("STALE", id)["result-value"])
    end)

    it("never runs two attempts of one job at once, even when it is handed the job again", function()
      assert(o:set_queue_type("TWICE", "QUEUE"))
      local jobs = { TWICE = { f = function(args, job)
        job.redis:call("RPUSH", "test:ledger", "TWICE:" .. job.id .. ":" .. job.attempt .. ":start")
        for _ = 1, 20 do
          jobrt.sleep(0.1)
          job.redis:call("RPUSH", "test:ledger", "TWICE:" .. job.id .. ":" .. job.attempt .. ":tick")
        end
        return "done"
      end } }
      local id = ws.enqueue(o, "TWICE", "f")
      w = serve(jobs, { lease = 1, concurrency = 2 })
      -- its renewals do not get through for a while (as behind a broken link), then they do
      local until_ = jobrt.monotime() + 1.6
      inject("renew", function(real, self, ...)
        if jobrt.monotime() < until_ then return nil, "ECONN: injected: renewals lost" end
        return real(self, ...)
      end)
      assert(w:start())
      h.wait_for(function() return ws.state_of(o, "TWICE", id) == "finished" end, 15, "the job")
      local last = assert_no_overlap("TWICE", id)
      assert.is_true(last >= 2, "the job should have been taken back and run again")
    end)
  end)

  describe("4. a frozen worker", function()
    local dir
    setup(function()
      dir = ws.jobs_dir{ ["f.lua"] = LEDGER .. [[
return { FROZEN = { run = function(args, job) return ticking(job, 2) end } } ]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    it("stops its handlers at their next yield once it wakes up past its lease", function()
      assert(o:set_queue_type("FROZEN", "LBQUEUE"))
      local p1 = ws.start_worker(dir, { "--lease", "1" })
      local id = ws.enqueue(o, "FROZEN", "run", {}, { jobHash = "one-resource" })
      h.wait_for(function() return count("FROZEN", id, "tick", 1) >= 2 end, 5, "attempt 1 to run")
      local p2 = ws.start_worker(dir, { "--lease", "1" })
      p1:kill("SIGSTOP")
      h.wait_for(function() return count("FROZEN", id, "start", 2) == 1 end, 10, "attempt 2 on the other worker")
      p1:kill("SIGCONT")
      h.wait_for(function() return ws.state_of(o, "FROZEN", id) == "finished" end, 10, "the job")
      ws.stop_worker(p1)
      local _, _, err1 = ws.stop_worker(p2)
      assert.equal(2, assert_no_overlap("FROZEN", id))
      assert.equal(0, count("FROZEN", id, "end", 1))
      assert.equal(1, count("FROZEN", id, "end", 2))
      assert.equal("successful", o:get("FROZEN", id).result)
      assert.is_string(err1)
    end)
  end)

  describe("5. job.redis", function()
    local dir, p
    setup(function()
      dir = ws.jobs_dir{ ["r.lua"] = [[
local jobrt = require 'jobrt'
return { RC = {
  multi = function(args, job)
    job.redis:call("MULTI")
    job.redis:call("SET", "test:in-multi", "1")
    jobrt.sleep(0.5)                 -- another job runs meanwhile
    return job.redis:call("EXEC")
  end,
  get = function(args, job) return job.redis:call("GET", "test:plain") end,
  select = function(args, job) job.redis:call("SELECT", 1); return job.redis:call("SET", "test:db1", "x") end,
  conns = function(args, job)
    return job.redis:call("CLIENT", "ID")
  end,
  wrongtype = function(args, job) job.redis:call("RPUSH", "test:plain", "x"); return "unreachable" end,
  tolerant = function(args, job)
    local v, err = job.redis:try("RPUSH", "test:plain", "x")
    return { v = v == nil and "nil" or v, err = err }
  end,
} }
]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
    before_each(function()
      assert(o:set_queue_type("RC", "QUEUE"))
      r:call("SET", "test:plain", "plain value")
      p = ws.start_worker(dir, { "--concurrency", "4" })
    end)
    after_each(function() ws.stop_worker(p) end)

    local function result(id)
      h.wait_for(function() return ws.state_of(o, "RC", id) == "finished" end, 5, "job " .. id)
      return o:get("RC", id)
    end

    it("is a connection of the job's own: one handler's MULTI does not swallow another's GET", function()
      local m = ws.enqueue(o, "RC", "multi")
      h.wait_for(function() return ws.state_of(o, "RC", m) == "executing" end, 5, "the MULTI job")
      local g = ws.enqueue(o, "RC", "get")
      assert.equal('"plain value"', result(g)["result-value"])
      assert.equal('["OK"]', result(m)["result-value"])
    end)

    it("a connection moved to another db is closed, not handed to the next job", function()
      if h.cluster then return pending("a Redis Cluster has only database 0 (the router refuses SELECT: tests/09-cluster)") end
      assert.equal("successful", result(ws.enqueue(o, "RC", "select")).result)
      for _ = 1, 3 do
        assert.equal('"plain value"', result(ws.enqueue(o, "RC", "get"))["result-value"])
      end
    end)

    it("is kept alive between jobs (a pool, not a connection per job)", function()
      local ids = {}
      for i = 1, 5 do ids[i] = result(ws.enqueue(o, "RC", "conns"))["result-value"] end
      for i = 2, 5 do assert.equal(ids[1], ids[i]) end
    end)

    it("a Redis error fails the job (retries apply); try() hands it to the handler instead", function()
      local rec = result(ws.enqueue(o, "RC", "wrongtype"))
      assert.equal("failed", rec.result)
      assert.matches("r.lua:%d+: job.redis RPUSH: WRONGTYPE", rec["error-reason"])
      local ok = result(ws.enqueue(o, "RC", "tolerant"))
      assert.equal("successful", ok.result)
      local v = cjson.decode(ok["result-value"])
      assert.equal("nil", v.v)
      assert.matches("^WRONGTYPE", v.err)
    end)
  end)

  describe("6. fencing tokens", function()
    it("grow with every lease handed out in the queue", function()
      assert(o:set_queue_type("q", "QUEUE"))
      for _ = 1, 3 do ws.enqueue(o, "q", "f") end
      local res = o:reserve("q", "w", 2, 0.05)
      local f1, f2 = res.jobs[1].fence, res.jobs[2].fence
      assert.is_true(f2 > f1)
      h.wait_for(function() return o:requeue_expired("q") > 0 end, 3, "the leases to run out")
      local again = o:reserve("q", "w", 1, 10, true).jobs[1]
      assert.is_true(again.fence > f2)
      assert.equal(again.fence, tonumber(r:call("HGET", "jobrt:{q}:stats", "total-reserved")))
    end)
  end)

  describe("7. a worker crash", function()
    local dir
    setup(function()
      dir = ws.jobs_dir{ ["c.lua"] = [[
local jobrt = require 'jobrt'
return { CRASH = {
  crash = function(args, job) os.exit(3) end,
  ordinary = function(args, job) jobrt.sleep(2); return "ok " .. job.attempt end,
} } ]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    it("is not charged to the jobs beside it; the job that crashes every time is failed as poison", function()
      assert(o:set_queue_type("CRASH", "QUEUE"))
      local crashers, ordinary = {}, {}
      crashers[1] = ws.enqueue(o, "CRASH", "crash", {}, { retries = 0 })
      for i = 1, 3 do ordinary[i] = ws.enqueue(o, "CRASH", "ordinary", {}, { retries = 0 }) end
      crashers[2] = ws.enqueue(o, "CRASH", "crash", {}, { retries = 0 })
      for i = 4, 6 do ordinary[i] = ws.enqueue(o, "CRASH", "ordinary", {}, { retries = 0 }) end
      local sup = ws.start_worker(dir, { "--procs", "1", "--concurrency", "4", "--lease", "1" })
      h.wait_for(function()
        for _, id in ipairs(crashers) do if ws.state_of(o, "CRASH", id) ~= "finished" then return false end end
        for _, id in ipairs(ordinary) do if ws.state_of(o, "CRASH", id) ~= "finished" then return false end end
        return true
      end, 90, "every job to end")
      ws.stop_worker(sup)
      for _, id in ipairs(crashers) do
        local rec = o:get("CRASH", id)
        assert.equal("failed", rec.result)
        assert.matches("^poison job: its worker stopped renewing its lease in 3 attempt%(s%) in a row", rec["error-reason"])
      end
      for _, id in ipairs(ordinary) do
        local rec = o:get("CRASH", id)
        assert.equal("successful", rec.result, "ordinary job " .. id .. ": " .. tostring(rec["error-reason"]))
        assert.is_nil(rec.failures)     -- no retry used up by a crash
      end
    end)
  end)
end)
