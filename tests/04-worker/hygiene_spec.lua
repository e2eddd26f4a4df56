-- Order, hygiene and limits through the worker (issue 9): wake-ups after outages, handler time
-- limits, nested coroutines, and what a client says when no worker serves a queue. Real
-- redis-server; where a fault must happen at an exact moment it is injected into this process's
-- own worker (its calls still go to the real Redis).
local jobrt = require 'jobrt'
local ops_mod = require 'jobrt.ops'
local worker_mod = require 'jobrt.worker'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

describe("order, hygiene and limits", function()
  local r, o
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
  end)
  after_each(function() r:close() end)

  describe("handler time limits", function()
    local dir
    setup(function()
      dir = ws.jobs_dir{ ["t.lua"] = [[
local jobrt = require 'jobrt'
return { TL = {
  spin = { timeout = 1, handler = function() local n = 0 while true do n = n + 1 end end },
  spin_later = { timeout = 1, handler = function() jobrt.sleep(0.1) while true do end end },
  swallow = { timeout = 1, handler = function()
    -- tries to survive its interruption by catching it, again and again
    while true do pcall(function() while true do end end) end
  end },
  spawner = { timeout = 0.5, handler = function(args, job)
    jobrt.spawn(function()
      while true do job.redis:call("INCR", "test:child-ticks"); jobrt.sleep(0.05) end
    end)
    jobrt.sleep(60)
  end },
  ok = function() return "ok" end,
  cmd = { timeout = 0.5, handler = function(args, job)
    local res = jobrt.exec({ "sh", "-c", "echo $$ > " .. args.pidfile .. "; exec sleep 30" })
    return res and res.code
  end },
  exec_ok = function(args, job)
    local res, err = jobrt.exec("printf '%s' \"$0\"; echo oops >&2; exit 4", { timeout = 5 })
    return res and { code = res.code, out = res.stdout, err = res.stderr } or err
  end,
} } ]] }
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
    before_each(function() assert(o:set_queue_type("TL", "QUEUE")) end)

    local function outcome(id, secs)
      h.wait_for(function() return ws.state_of(o, "TL", id) == "finished" end, secs or 8, "job " .. id)
      return o:get("TL", id)
    end

    for _, mode in ipairs({ { "in one process", {} }, { "under --procs 1", { "--procs", "1" } } }) do
      it("a handler that never yields is stopped at its timeout, from its first instruction (" .. mode[1] .. ")", function()
        local p = ws.start_worker(dir, mode[2])
        local t0 = jobrt.monotime()
        for _, job in ipairs({ "spin", "spin_later", "swallow" }) do
          local rec = outcome(ws.enqueue(o, "TL", job))
          assert.same({ "failed", "timed out after 1 s (the job's timeout): make the handler faster or raise its timeout" },
            { rec.result, rec["error-reason"] }, job)
        end
        assert.is_true(jobrt.monotime() - t0 < 9, "the watchdog (10 s) must not be what stopped them")
        -- and the worker goes on
        assert.equal('"ok"', outcome(ws.enqueue(o, "TL", "ok"))["result-value"])
        local code, _, err = ws.stop_worker(p)
        assert.equal(0, code, err)
        assert.is_nil(err:find("exiting with status 70", 1, true))
        assert.is_nil(err:find("coroutine failed", 1, true))
      end)
    end

    it("jobrt.exec runs a command without blocking, and the command dies with its job", function()
      local p = ws.start_worker(dir, {})
      local v = require('cjson').decode(outcome(ws.enqueue(o, "TL", "exec_ok"))["result-value"])
      assert.same({ code = 4, out = "/bin/sh", err = "oops\n" }, v)
      local pidfile = h.tmpdir() .. "/pid"
      local rec = outcome(ws.enqueue(o, "TL", "cmd", { pidfile = pidfile }))
      assert.equal("timed out after 0.5 s (the job's timeout): make the handler faster or raise its timeout", rec["error-reason"])
      local f = assert(io.open(pidfile))
      local pid = tonumber(f:read("*l"))
      f:close()
      local proc = require 'jobrt.core.proc'
      h.wait_for(function() return not proc.kill(pid, 0) end, 5, "the command to be killed")
      ws.stop_worker(p)
    end)

    it("coroutines a handler spawned end with its job", function()
      local p = ws.start_worker(dir, {})
      local rec = outcome(ws.enqueue(o, "TL", "spawner"))
      assert.equal("failed", rec.result)
      local ticks = tonumber(r:call("GET", "test:child-ticks")) or 0
      assert.is_true(ticks > 0)
      -- no more ticks after the job ended (give a stray one time to show up)
      local t_end = jobrt.monotime() + 0.4
      h.wait_for(function() return jobrt.monotime() > t_end end, 2, "a moment")
      assert.equal(ticks, tonumber(r:call("GET", "test:child-ticks")))
      ws.stop_worker(p)
    end)
  end)

  describe("waiting inside a coroutine of the user's own", function()
    local MSG = "cannot wait inside a coroutine made with coroutine.create or coroutine.wrap (jobrt resumes only coroutines it started): start it with jobrt.spawn instead, and hand results back with a jobrt.cond or jobrt.waitgroup"
    local cases = {
      { "jobrt.sleep", function() jobrt.sleep(0.01) end },
      { "redis call", function() r:call("PING") end },
      { "jobrt.suspend", function() local c = jobrt.cond(); c:wait(0.01) end },
    }
    for _, c in ipairs(cases) do
      it("is refused with a clear error, and nothing hangs: " .. c[1], function()
        local gen = coroutine.wrap(function() c[2](); coroutine.yield("never") end)
        local ok, err = pcall(gen)
        assert.is_false(ok)
        assert.matches(c[1] .. ": " .. MSG, err, 1, true)
        -- the caller goes on: a bare yield comes back on the next loop turn, a Redis call works
        coroutine.yield()
        assert.equal("PONG", r:call("PING"))
      end)
    end
  end)

  describe("waiting for a result", function()
    it("says at once that no live worker serves the queue, then waits (enqueue --wait)", function()
      assert(o:set_queue_type("NOBODY", "QUEUE"))
      local t0 = jobrt.monotime()
      local code, out, err = h.run_jobrt({ "enqueue", "NOBODY", "f", "{}", "--wait", "--wait-timeout", "1.5" })
      assert.equal(1, code)
      assert.matches("enqueue: no live worker serves queue 'NOBODY': job 1 waits until one does", err, 1, true)
      assert.matches("did not finish within 1.5 s", err, 1, true)
      assert.is_true(jobrt.monotime() - t0 >= 1.5)
      assert.equal("", out)
    end)

    it("says nothing of the kind when a worker serves it", function()
      assert(o:set_queue_type("SERVED", "QUEUE"))
      local dir = ws.jobs_dir{ ["s.lua"] = "return { SERVED = { f = function() return 1 end } }" }
      local p = ws.start_worker(dir, {})
      local code, out, err = h.run_jobrt({ "enqueue", "SERVED", "f", "{}", "--wait" })
      ws.stop_worker(p)
      assert.equal(0, code, err)
      assert.equal("1\n", out)
      assert.is_nil(err:find("no live worker", 1, true))
    end)
  end)

  describe("an in-process worker", function()
    local w
    local inject_for, restore = ws.injector()
    after_each(function()
      if w then w:stop(0); w = nil end
      restore()
    end)

    it("keeps nothing of the jobs it finished (memory stays flat from 3000 to 6000 jobs)", function()
      assert(o:set_queue_type("MEM", "QUEUE"))
      local n = 0
      w = assert(worker_mod.new{ redis = h.url, name = "spec", log_jobs = false, concurrency = 50,
        jobs = { MEM = { f = function() n = n + 1 end } } })
      assert(w:start())
      local q = jobrt.connect(h.url)
      local function run(k)
        local list = {}
        for i = 1, k do list[i] = { job = "f" } end
        local want = n + k
        q:enqueueJobs("MEM", list)
        h.wait_for(function() return n >= want end, 30, "the jobs")
        h.wait_for(function() return w.inflight == 0 and #w.queues.MEM.outcomes == 0 end, 5, "the outcomes stored")
        jobrt.sleep(0.05)
        collectgarbage("collect")
        collectgarbage("collect")
        return collectgarbage("count")
      end
      local first = run(3000)
      local second = run(3000)
      q:close()
      -- a job that stays reachable costs about 1.9 KB (its coroutine, scope, state, context)
      assert.is_true(second - first < 1024, ("the heap grew by %.0f KB over 3000 more jobs"):format(second - first))
    end)

    it("tries again at once when a wake-up comes during its error backoff (Redis is back)", function()
      assert(o:set_queue_type("OUT", "QUEUE"))
      local started = {}
      w = assert(worker_mod.new{ redis = h.url, name = "spec", log_jobs = false,
        jobs = { OUT = { f = function() started[#started + 1] = jobrt.monotime(); return true end } } })
      -- Redis "down" for the worker's reserve: every call fails until we say so; the gaps
      -- between its tries grow to the longest backoff
      local down, tries, poked_at = true, {}, nil
      inject_for("reserve", function(real, self, ...)
        tries[#tries + 1] = jobrt.monotime()
        if down then return nil, "ECONN: injected: Redis is down" end
        return real(self, ...)
      end, w)
      assert(w:start())
      local q = w.queues.OUT
      h.wait_for(function() return #tries >= 2 and tries[#tries] - tries[#tries - 1] >= 1.5 end, 20,
        "the worker's tries to back off to about 2 s")
      -- right after a failed try (its next is about 2 s away) Redis comes back, and the
      -- restored subscription wakes the worker (the message a resubscribe delivers)
      local n = #tries
      h.wait_for(function() return #tries > n end, 5, "one more failed try")
      assert(o:enqueue("OUT", "f", "{}", {}))
      down = false
      poked_at = jobrt.monotime()
      w:poke(q, "resubscribed")
      h.wait_for(function() return #started == 1 end, 5, "the job")
      assert.is_true(started[1] - poked_at < 0.5, ("the job started %.2fs after the wake-up"):format(started[1] - poked_at))
    end)
  end)
end)
