-- The worker end to end: real `jobrt work` processes against a real redis-server, checked
-- through Redis. Handlers report what they see into Redis keys (test:*).
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'

local ws = require 'tests.worker_support'
local jobs_dir, start_worker, stop_worker = ws.jobs_dir, ws.start_worker, ws.stop_worker
local enqueue, state_of, REPORT = ws.enqueue, ws.state_of, ws.REPORT

-- On a cluster (make test-cluster) each node counts its own commands: the sum over the
-- primaries (a replica counts the RPOPs it replays from its primary too).
if h.cluster then
  h.cluster_rpops = function()
    local n = 0
    for _, port in ipairs(h.cluster:ports()) do
      local c = h.cluster:node(port)
      if c:call("ROLE")[1] == "master" then
        n = n + (tonumber(c:call("INFO", "commandstats"):match("cmdstat_rpop:calls=(%d+)")) or 0)
      end
      c:close()
    end
    return n
  end
end

describe("jobrt work", function()
  local r, o
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
  end)
  after_each(function() r:close() end)

  local function log_entries()
    local out = {}
    for _, s in ipairs(r:call("LRANGE", "test:log", 0, -1)) do out[#out + 1] = cjson.decode(s) end
    return out
  end

  describe("handlers", function()
    local dir
    setup(function()
      dir = jobs_dir{ ["t.lua"] = REPORT .. [[
return { T = {
  ok = function(args, job) return { got = args.x, id = job.id, queue = job.queue, attempt = job.attempt } end,
  raise = function(args, job) error("handler raised: " .. tostring(args.x)) end,
  nilerr = function(args, job) return nil, "it did not work" end,
  badresult = function(args, job) return { f = function() end } end,
  slow = { timeout = 0.2, handler = function(args, job) jobrt.sleep(5); return "never" end },
  flaky = { retries = 2, handler = function(args, job)
    if job.attempt < 3 then error("attempt " .. job.attempt .. " fails") end
    return { attempt = job.attempt } end },
  sleeper = function(args, job) jobrt.sleep(args.s or 0.05); return "slept" end,
  enq = function(args, job) return { child = job:enqueue("T", "ok", { x = "from handler" }) } end,
  falseerr = function() return false, "false and a reason" end,
  tableerr = function() error({ code = 42 }) end,
  nilraise = function() error() end,
} }
]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    local p
    before_each(function()
      assert(o:set_queue_type("T", "QUEUE"))
      p = start_worker(dir, { "--concurrency", "5" })
    end)
    after_each(function() stop_worker(p) end)

    it("reserves once per job when jobs come one at a time (none after a completion)", function()
      local q = jobrt.connect(h.url)
      q:run("T", "ok", { x = 0 })                 -- started, subscribed
      local function rpops()       -- reserve.lua is the only script that pops the wait list
        return h.cluster_rpops and h.cluster_rpops() or tonumber(r:call("INFO", "commandstats"):match("cmdstat_rpop:calls=(%d+)")) or 0
      end
      local before = rpops()
      for i = 1, 20 do assert.equal(i, q:run("T", "ok", { x = i }).got) end
      assert.equal(20, rpops() - before)
      q:close()
    end)

    it("arms a timer for a wake-up that says a job is due later, and reserves once, when it is due", function()
      local q = jobrt.connect(h.url)
      q:run("T", "ok", { x = 0 })                 -- the worker has reserved once: it knows the server's clock
      local function rpops() return h.cluster_rpops and h.cluster_rpops() or tonumber(r:call("INFO", "commandstats"):match("cmdstat_rpop:calls=(%d+)")) or 0 end
      local before = rpops()
      local t = r:call("TIME")
      local due = tonumber(t[1]) + tonumber(t[2]) / 1e6 + 0.5
      local id = enqueue(o, "T", "ok", { x = 1 }, { timestamp = due })
      jobrt.sleep(0.3)
      assert.equal(0, rpops() - before)           -- not yet: no reserve that could only find nothing
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the delayed job")
      assert.equal(1, rpops() - before)
      local started = tonumber(o:get("T", id)["executing-created"])
      assert.is_true(started >= due and started < due + 0.1, ("started %.3f s after its due time"):format(started - due))
      q:close()
    end)

    it("stores the return value as the result", function()
      local id = enqueue(o, "T", "ok", { x = 5 })
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      local rec = o:get("T", id)
      assert.equal("successful", rec.result)
      assert.same({ got = 5, id = id, queue = "T", attempt = 1 }, cjson.decode(rec["result-value"]))
      assert.is_truthy(rec["pending-created"] and rec["executing-created"] and rec["finished-created"])
      assert.is_truthy(rec.worker:match("^[^:]+:%d+:%x+$"))
    end)

    it("fails a job that raises, with the message and a traceback", function()
      local id = enqueue(o, "T", "raise", { x = "boom" })
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      local rec = o:get("T", id)
      assert.equal("failed", rec.result)
      assert.matches("handler raised: boom$", rec["error-reason"])
      assert.matches("stack traceback:", rec["error-exception"], 1, true)
      assert.matches("t.lua:%d+: in function", rec["error-exception"])
    end)

    it("fails a job that returns nil, err", function()
      local id = enqueue(o, "T", "nilerr")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      assert.equal("it did not work", o:get("T", id)["error-reason"])
    end)

    it("fails a job whose result cannot be stored as JSON, saying so", function()
      local id = enqueue(o, "T", "badresult")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      assert.matches("^the result of T%.badresult cannot be stored as JSON %(.*%): return tables of strings, numbers and booleans$",
        o:get("T", id)["error-reason"])
    end)

    it("fails a job that runs past its timeout and keeps serving", function()
      local id = enqueue(o, "T", "slow")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the timeout")
      assert.equal("timed out after 0.2 s (the job's timeout): make the handler faster or raise its timeout",
        o:get("T", id)["error-reason"])
      local id2 = enqueue(o, "T", "ok", { x = 1 })
      h.wait_for(function() return state_of(o, "T", id2) == "finished" end, 5, "the next job")
    end)

    it("fails a job whose name the worker does not serve, naming what it serves", function()
      local id = enqueue(o, "T", "nosuch")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      assert.equal("unknown job 'nosuch' in queue T: this worker serves badresult, enq, falseerr, flaky, nilerr, nilraise, ok, raise, sleeper, slow, tableerr",
        o:get("T", id)["error-reason"])
    end)

    it("retries with backoff up to the handler's retries", function()
      local id = enqueue(o, "T", "flaky")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 15, "three attempts")
      local rec = o:get("T", id)
      assert.equal("successful", rec.result)
      assert.equal("3", rec.attempts)
    end)

    it("lets a handler enqueue", function()
      local id = enqueue(o, "T", "enq")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      local child = cjson.decode(o:get("T", id)["result-value"]).child
      h.wait_for(function() return state_of(o, "T", child) == "finished" end, 5, "the child job")
      assert.equal("from handler", cjson.decode(o:get("T", child)["result-value"]).got)
    end)

    it("runs jobs concurrently: 5 sleeping jobs take about as long as one", function()
      local ids = {}
      for i = 1, 5 do ids[i] = enqueue(o, "T", "sleeper", { s = 0.3 }) end
      local t0 = jobrt.monotime()
      h.wait_for(function()
        for _, id in ipairs(ids) do if state_of(o, "T", id) ~= "finished" then return false end end
        return true
      end, 5, "five jobs")
      assert.is_true(jobrt.monotime() - t0 < 1.2)
    end)

    it("fails a job that returns false, err", function()
      local id = enqueue(o, "T", "falseerr")
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      assert.equal("failed", o:get("T", id).result)
      assert.equal("false and a reason", o:get("T", id)["error-reason"])
    end)

    it("an error raised with a table is stored as JSON, with nil as a clear phrase", function()
      local id1 = enqueue(o, "T", "tableerr")
      local id2 = enqueue(o, "T", "nilraise")
      h.wait_for(function() return state_of(o, "T", id1) == "finished" and state_of(o, "T", id2) == "finished" end, 5, "the jobs")
      assert.equal('error object {"code":42}', o:get("T", id1)["error-reason"])
      assert.equal("error raised without a message (error() or error(nil))", o:get("T", id2)["error-reason"])
    end)

    it("deleting a running job stops its handler at once", function()
      local id = enqueue(o, "T", "sleeper", { s = 30 })
      h.wait_for(function() return state_of(o, "T", id) == "executing" end, 5, "the job to start")
      assert.is_true(o:delete("T", id))
      assert.is_nil(o:get("T", id))
      -- the worker stops it and reports it: nothing of it is left, and the slot is free again
      h.wait_for(function() return o:stats("T").executing == 0 end, 5, "the cancelled job to stop")
      assert.equal(0, r:call("EXISTS", "jobrt:{T}:job:" .. id))
      local id2 = enqueue(o, "T", "ok", { x = 2 })
      h.wait_for(function() return state_of(o, "T", id2) == "finished" end, 5, "the next job")
    end)

    it("keeps a worker registry entry with its heartbeat and counts", function()
      local id = enqueue(o, "T", "ok", { x = 1 })
      h.wait_for(function() return state_of(o, "T", id) == "finished" end, 5, "the job")
      local ids = r:call("ZRANGE", "jobrt:{workers}", 0, -1)
      assert.equal(1, #ids)
      local w = r:call("HGETALL", "jobrt:{workers}:" .. ids[1])
      local rec = {}
      for i = 1, #w, 2 do rec[w[i]] = w[i + 1] end
      assert.equal(tostring(p:pid()), rec.pid)
      assert.equal("T", rec.queues)
      assert.is_truthy(tonumber(rec.heartbeat))
      assert.is_true(r:call("TTL", "jobrt:{workers}:" .. ids[1]) > 0)
      -- its entry in jobrt:{workers} expires with its hash
      local exp = tonumber(r:call("ZSCORE", "jobrt:{workers}", ids[1]))
      local t = r:call("TIME")
      assert.is_true(exp > tonumber(t[1]) * 1000)
    end)
  end)

  describe("queue types through the worker", function()
    local dir
    setup(function()
      dir = jobs_dir{ ["q.lua"] = REPORT .. [[
return {
  FIFO = { rec = function(args, job) note(job, "start") return true end },
  LB = { work = function(args, job)
    note(job, "start"); jobrt.sleep(args.s or 0.05); note(job, "end"); return true end },
  DEL = { at = function(args, job) note(job, args.due) return true end },
}
]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
    before_each(function()
      assert(o:set_queue_type("FIFO", "QUEUE"))
      assert(o:set_queue_type("LB", "LBQUEUE"))
      assert(o:set_queue_type("DEL", "DELQUEUE"))
    end)

    it("QUEUE: jobs start in the order they were enqueued", function()
      local ids = {}
      for i = 1, 20 do ids[i] = enqueue(o, "FIFO", "rec", {}, { jobHash = "ignored" }) end
      local p = start_worker(dir, { "--concurrency", "1" })
      h.wait_for(function() return #log_entries() == 20 end, 10, "20 jobs")
      stop_worker(p)
      local order = {}
      for i, e in ipairs(log_entries()) do order[i] = e.id end
      assert.same(ids, order)
    end)

    it("LBQUEUE: identical jobs never overlap in time, even with two workers", function()
      assert(o:set_queue_type("LB", "LBQUEUE"))
      local p1 = start_worker(dir, { "--concurrency", "4" })
      local p2 = start_worker(dir, { "--concurrency", "4" })
      -- keep enqueueing the same two hashes while they run
      for _ = 1, 12 do
        enqueue(o, "LB", "work", {}, { jobHash = "user-1" })
        enqueue(o, "LB", "work", {}, { jobHash = "user-2" })
        jobrt.sleep(0.02)
      end
      h.wait_for(function()
        local st = o:stats("LB")
        return st.pending == 0 and st.executing == 0 and st.parked == 0 and st.delayed == 0
      end, 15, "the LB queue to drain")
      stop_worker(p1)
      stop_worker(p2)
      local spans, open = {}, {}
      for _, e in ipairs(log_entries()) do
        local rec = o:get("LB", e.id)
        local hash = rec.hash
        if e.what == "start" then
          assert.is_nil(open[hash], "two jobs of " .. hash .. " ran at once")
          open[hash] = e.id
        else
          open[hash] = nil
          spans[hash] = (spans[hash] or 0) + 1
        end
      end
      assert.is_true(spans["user-1"] >= 2 and spans["user-2"] >= 2)
    end)

    it("--concurrency holds across several queues", function()
      local cdir = jobs_dir{ ["c.lua"] = [[
local jobrt = require 'jobrt'
local function work(args, job)
  local n = job.redis:call("INCR", "test:running")
  job.redis:call("RPUSH", "test:max", n)
  jobrt.sleep(0.05)
  job.redis:call("DECR", "test:running")
end
return { FIFO = { w = work }, DEL = { w = work }, LB = { w = work } }
]] }
      for i = 1, 4 do
        enqueue(o, "FIFO", "w", { i = i })
        enqueue(o, "DEL", "w", { i = i })
        enqueue(o, "LB", "w", { i = i }, { jobHash = "h" .. i })
      end
      local p = start_worker(cdir, { "--concurrency", "1" })
      h.wait_for(function() return r:call("LLEN", "test:max") == 12 end, 10, "12 jobs")
      stop_worker(p)
      os.execute("rm -rf '" .. cdir .. "'")
      for _, n in ipairs(r:call("LRANGE", "test:max", 0, -1)) do assert.equal("1", n) end
    end)

    it("LBQUEUE: deleting a running job stops it, then the parked job of its jobHash runs", function()
      local p = start_worker(dir, { "--concurrency", "4" })
      local a = enqueue(o, "LB", "work", { s = 30 }, { jobHash = "h" })
      h.wait_for(function() return #log_entries() == 1 end, 5, "the first job to start")
      local b = enqueue(o, "LB", "work", {}, { jobHash = "h" })
      local t_delete = jobrt.now()
      assert.is_true(o:delete("LB", a))
      h.wait_for(function() return state_of(o, "LB", b) == "finished" end, 5, "the parked job")
      local _, _, err = stop_worker(p)
      assert.matches("id=" .. a .. " attempt=1 stopped: deleted while running", err, 1, true)
      local starts = {}
      for _, e in ipairs(log_entries()) do if e.what == "start" then starts[e.id] = e.t end end
      assert.is_true(starts[b] > t_delete)
    end)

    it("DELQUEUE: runs each job at its time, not before", function()
      assert(o:set_queue_type("DEL", "DELQUEUE"))
      local p = start_worker(dir)
      local now = jobrt.now()
      for _, d in ipairs({ 0.3, 0.1, 0.2 }) do
        enqueue(o, "DEL", "at", { due = now + d }, { timestamp = now + d })
      end
      h.wait_for(function() return #log_entries() == 3 end, 5, "three delayed jobs")
      stop_worker(p)
      local last = 0
      for _, e in ipairs(log_entries()) do
        local due = tonumber(e.what)
        assert.is_true(e.t >= due - 0.002, ("ran %.4fs early"):format(due - e.t))
        assert.is_true(e.t - due < 0.5, ("ran %.3fs late"):format(e.t - due))
        assert.is_true(due > last, "out of due order")
        last = due
      end
    end)
  end)

  describe("reliability", function()
    local dir
    setup(function()
      dir = jobs_dir{ ["r.lua"] = REPORT .. [[
return {
  R = {
    count = function(args, job) job.redis:call("HINCRBY", "test:runs", args.n, 1) return args.n end,
    hang_once = function(args, job)
      note(job, "start")
      if job.attempt == 1 then jobrt.sleep(60) end
      return "done on attempt " .. job.attempt
    end,
    long = function(args, job) note(job, "start"); jobrt.sleep(0.5); return "finished" end,
    spin = { retries = 0, handler = function(args, job) note(job, "start"); while true do end end },
    spin_at_once = { retries = 0, handler = function() local n = 0 while true do n = n + 1 end end },
  },
}
]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
    before_each(function() assert(o:set_queue_type("R", "QUEUE")) end)

    it("1000 jobs with --procs 2 --concurrency 20 all complete exactly once", function()
      local wg = jobrt.waitgroup()
      for b = 0, 9 do
        wg:spawn(function()
          for i = b * 100 + 1, b * 100 + 100 do enqueue(o, "R", "count", { n = i }) end
        end)
      end
      assert.is_true(wg:wait(30))
      local sup = start_worker(dir, { "--procs", "2", "--concurrency", "20" }, nil, 2)
      h.wait_for(function() return o:stats("R").completed == 1000 end, 60, "1000 completions")
      local code = stop_worker(sup)
      assert.equal(0, code)
      local runs = r:call("HGETALL", "test:runs")
      assert.equal(2000, #runs)
      for i = 2, #runs, 2 do assert.equal("1", runs[i]) end
    end)

    it("kill -9 of a worker mid-job: the job completes on another within lease + margin", function()
      local p1 = start_worker(dir, { "--lease", "1" })
      local id = enqueue(o, "R", "hang_once")
      h.wait_for(function() return #log_entries() == 1 end, 5, "the first attempt to start")
      local p2 = start_worker(dir, { "--lease", "1" })
      local t0 = jobrt.monotime()
      p1:kill("SIGKILL")
      p1:wait()
      h.wait_for(function() return state_of(o, "R", id) == "finished" end, 6, "the job on the other worker")
      assert.is_true(jobrt.monotime() - t0 < 1 + 2.5)
      local rec = o:get("R", id)
      assert.equal("successful", rec.result)
      assert.equal('"done on attempt 2"', rec["result-value"])
      stop_worker(p2)
    end)

    it("SIGTERM mid-job: the job completes and the process exits 0", function()
      local p = start_worker(dir)
      local id = enqueue(o, "R", "long")
      h.wait_for(function() return #log_entries() == 1 end, 5, "the job to start")
      local code, _, err = stop_worker(p)
      assert.equal(0, code)
      assert.equal("finished", state_of(o, "R", id))
      assert.equal("successful", o:get("R", id).result)
      assert.matches("stopping gracefully", err, 1, true)
    end)

    it("a handler that never yields: the child is killed and restarted, the job ends failed", function()
      local sup = start_worker(dir, { "--procs", "1", "--lease", "1", "--watchdog", "1", "--max-stalls", "0" })
      local id = enqueue(o, "R", "spin")
      h.wait_for(function() return state_of(o, "R", id) == "finished" end, 20, "the spinning job to fail")
      assert.equal("failed", o:get("R", id).result)
      -- the restarted child serves the next job
      local id2 = enqueue(o, "R", "count", { n = 1 })
      h.wait_for(function() return state_of(o, "R", id2) == "finished" end, 10, "a job after the restart")
      local code, _, err = stop_worker(sup)
      assert.equal(0, code)
      assert.matches("has not ticked for", err, 1, true)
      assert.matches("restarting it", err, 1, true)
    end)

    it("SIGTERM to a supervisor whose child is stuck: the child is killed after its grace time", function()
      local sup = start_worker(dir, { "--procs", "1", "--grace", "0.5", "--watchdog", "100" })
      local id = enqueue(o, "R", "spin")
      h.wait_for(function() return #log_entries() == 1 end, 5, "the spinning job to start")
      local t0 = jobrt.monotime()
      sup:kill("SIGTERM")
      local guard = jobrt.timer()
      guard:start(30, function() sup:kill("SIGKILL") end)
      local code = sup:wait()
      guard:close()
      assert.equal(0, code)
      assert.is_true(jobrt.monotime() - t0 < 0.5 + 5 + 2)
      assert.matches("did not stop within its grace time; killing it", select(2, sup:output()), 1, true)
      assert.equal("executing", state_of(o, "R", id))     -- its lease brings it back
    end)

    for _, case in ipairs({ { "spin", "after its first yield" }, { "spin_at_once", "before its first yield" } }) do
      it("a handler that never yields (" .. case[2] .. ") in a single process: the watchdog fails that job, the worker goes on", function()
        local p = start_worker(dir, { "--watchdog", "1" })
        local id = enqueue(o, "R", case[1])
        h.wait_for(function() return state_of(o, "R", id) == "finished" end, 10, "the spinning job to be interrupted")
        assert.matches("^interrupted by the watchdog: the event loop was blocked for more than 1 s", o:get("R", id)["error-reason"])
        local id2 = enqueue(o, "R", "count", { n = 7 })
        h.wait_for(function() return state_of(o, "R", id2) == "finished" end, 5, "the next job")
        assert.equal(0, (stop_worker(p)))
      end)
    end

    it("--keep-ok and --keep-failed set how long finished records are kept", function()
      local p = start_worker(dir, { "--keep-ok", "100", "--keep-failed", "200" })
      local ok_id = enqueue(o, "R", "count", { n = 1 })
      local bad_id = enqueue(o, "R", "nosuch")
      h.wait_for(function()
        return state_of(o, "R", ok_id) == "finished" and state_of(o, "R", bad_id) == "finished"
      end, 5, "both jobs")
      stop_worker(p)
      local ttl_ok = r:call("TTL", "jobrt:{R}:job:" .. ok_id)
      local ttl_bad = r:call("TTL", "jobrt:{R}:job:" .. bad_id)
      assert.is_true(ttl_ok > 90 and ttl_ok <= 100, "successful record TTL " .. ttl_ok)
      assert.is_true(ttl_bad > 190 and ttl_bad <= 200, "failed record TTL " .. ttl_bad)
    end)

    it("--keep-ok 0 and --keep-failed 0 remove the record when the job ends (every completion goes on)", function()
      local p = start_worker(dir, { "--keep-ok", "0", "--keep-failed", "0" })
      local ids = {}
      for i = 1, 5 do ids[#ids + 1] = enqueue(o, "R", "count", { n = i }) end
      local bad_id = enqueue(o, "R", "nosuch")
      h.wait_for(function() return o:stats("R").completed == 5 and o:stats("R").total_failed == 1 end, 5, "the jobs")
      local code, _, err = stop_worker(p)
      assert.equal(0, code)
      for _, id in ipairs(ids) do assert.equal(0, r:call("EXISTS", "jobrt:{R}:job:" .. id)) end
      assert.equal(0, r:call("EXISTS", "jobrt:{R}:job:" .. bad_id))
      assert.equal(0, o:stats("R").failed)
      assert.is_nil(err:find("cannot store", 1, true))
    end)

    it("supervisor killed with -9: its children notice and stop by themselves", function()
      local sup = start_worker(dir, { "--procs", "2" }, nil, 2)
      local pids = {}
      for _, id in ipairs(r:call("ZRANGE", "jobrt:{workers}", 0, -1)) do
        pids[#pids + 1] = tonumber(r:call("HGET", "jobrt:{workers}:" .. id, "pid"))
      end
      assert.equal(2, #pids)
      sup:kill("SIGKILL")
      sup:wait()
      local proc = require 'jobrt.core.proc'
      h.wait_for(function()
        for _, pid in ipairs(pids) do if proc.kill(pid, 0) then return false end end
        return true
      end, 10, "the orphaned children to exit")
      -- they stopped gracefully: they took themselves out of the registry
      assert.equal(0, r:call("ZCARD", "jobrt:{workers}"))
    end)

    it("warns, naming the fix, when Redis may evict keys (maxmemory-policy is not noeviction)", function()
      local s = h.start_redis()
      local rr = h.redis(s.url)
      assert(ops_mod.new(rr):set_queue_type("R", "QUEUE"))
      assert(rr:call("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"))
      local p = start_worker(dir, {}, s.url)
      local _, _, err = stop_worker(p)
      assert.matches("Redis runs with maxmemory-policy allkeys-lru: under memory pressure it may evict job records and queue keys, losing jobs; run it with maxmemory-policy noeviction", err, 1, true)
      assert(rr:call("CONFIG", "SET", "maxmemory-policy", "noeviction"))
      p = start_worker(dir, {}, s.url)
      _, _, err = stop_worker(p)
      assert.is_nil(err:find("maxmemory-policy", 1, true))
      rr:close()
      s:stop()
    end)

    it("Redis killed and restarted mid-run (AOF on): all jobs still complete", function()
      local s = h.start_redis{ aof = true }
      local rr = h.redis(s.url)
      local oo = assert(ops_mod.new(rr))
      assert(oo:set_queue_type("R", "QUEUE"))
      -- the handler writes through job.redis, so a job that runs while Redis is down fails
      -- (a Redis error fails the job): its retries bring it through
      for i = 1, 200 do assert(oo:enqueue("R", "long", "{}", { retries = 5 })) end
      local p = start_worker(dir, { "--concurrency", "50", "--lease", "2", "--backoff", "0.2" }, s.url)
      h.wait_for(function() local st = oo:stats("R"); return st and st.completed and st.completed >= 20 end, 10, "some completions")
      s:kill()
      jobrt.sleep(2)          -- the outage itself: long enough for several retries of each kind
      s:restart()
      rr:close()
      rr = h.redis(s.url)
      oo = assert(ops_mod.new(rr))
      h.wait_for(function()
        local st = oo:stats("R")
        return st and st.pending == 0 and st.executing == 0 and st.delayed == 0
      end, 40, "the queue to drain after the restart")
      local st = oo:stats("R")
      assert.equal(0, st.failed)
      local code, _, err = stop_worker(p)
      assert.equal(0, code)
      assert.matches("lost connection to redis", err, 1, true)
      -- one line per kind of trouble for the whole outage, not one per retry
      for _, kind in ipairs({ "cannot store", "cannot renew", "cannot reserve" }) do
        local n = select(2, err:gsub(kind, ""))
        assert.is_true(n <= 1, ("%q logged %d times in one outage:\n%s"):format(kind, n, err))
      end
      rr:close()
      s:stop()
    end)
  end)

  describe("loading errors", function()
    local cases = {
      { "syntax error", { ["a.lua"] = "return {\n  Q = { j = function( end }\n}" },
        "^jobrt: [^\n]*/a%.lua:2: .+ %(syntax error: fix the file%)\n$" },
      { "non-table return", { ["a.lua"] = "return 42" },
        "^jobrt: [^\n]*/a%.lua: must return a jobDescription table like { QUEUENAME = { myJob = function%(args, job%) %.%.%. end } }, got number\n$" },
      { "handler not a function", { ["a.lua"] = "return { Q = { j = 5 } }" },
        "^jobrt: [^\n]*/a%.lua:1: Q%.j must be a function%(args, job%) or a table { handler = function%(args, job%) %.%.%. end }, got number\n$" },
      { "queue without jobs", { ["a.lua"] = "return {\n  ECHO = {} }" },
        "^jobrt: [^\n]*/a%.lua:2: queue ECHO has no jobs: add one, e%.g%. ECHO = { myJob = function%(args, job%) %.%.%. end }\n$" },
      { "table without handler", { ["a.lua"] = "return {\n  Q = {\n    j = { timeout = 1 } } }" },
        "^jobrt: [^\n]*/a%.lua:3: Q%.j%.handler must be a function, got nil\n$" },
      { "error while loading", { ["a.lua"] = "local x = nil; return x.y" },
        "^jobrt: [^\n]*/a%.lua: error while loading: [^\n]*/a%.lua:1: attempt to index local 'x' %(a nil value%)\nstack traceback:" },
      { "queue without a type", { ["a.lua"] = "return { NOTYPE = { j = function() end } }" },
        "^jobrt: queue 'NOTYPE' has no type in RESERVED:QCONFIG: declare it in its job file %(NOTYPE = { _type = 'QUEUE', %.%.%. }%) or set it with  jobrt queue%-type NOTYPE QUEUE|LBQUEUE|DELQUEUE\n$" },
      { "no job files", {}, "^jobrt: no %*%.lua job files under .+: add one returning" },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. ": one clear message, exit 1, nothing served", function()
        local dir = jobs_dir(case[2])
        local code, out, err = h.run_jobrt({ "work", dir, "--redis", h.url })
        os.execute("rm -rf '" .. dir .. "'")
        assert.equal(1, code)
        assert.equal("", out)
        assert.matches(case[3], err)
        assert.equal(0, r:call("ZCARD", "jobrt:{workers}"))
      end)
    end

    it("Redis not reachable: names the address and the fix", function()
      local dir = jobs_dir{ ["a.lua"] = "return { Q = { j = function() end } }" }
      local code, _, err = h.run_jobrt({ dir, "--redis", "redis://127.0.0.1:1" })
      os.execute("rm -rf '" .. dir .. "'")
      assert.equal(1, code)
      assert.equal("jobrt: ECONNREFUSED: cannot connect to redis at 127.0.0.1:1: Connection refused (is redis-server running? point --redis or JOBRT_REDIS at it)\n", err)
    end)

    it("unknown options are usage errors (exit 2)", function()
      local code, _, err = h.run_jobrt({ "work", "jobs/", "--concurency", "2" })
      assert.equal(2, code)
      assert.equal("jobrt work: unknown option --concurency (see jobrt work --help)\n", err)
    end)
  end)
end)
