-- Cron end to end with real `jobrt work` processes: one job per tick across two workers, one
-- catch-up run after a gap, --missed skip, entries declared in job files (and who removes
-- them), and the command line.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

local JOBS = [[
return { C = { tick = function(args, job) job.redis:call("RPUSH", "test:ticks", job.id) return job.id end } }
]]
local FILE_CRON = [[
return { C = {
  tick = function(args, job) job.redis:call("RPUSH", "test:ticks", job.id) end,
  filetick = { cron = { '@every 1s', args = { from = "file" } }, handler = function(args, job)
    job.redis:call("RPUSH", "test:filetick", job.id .. " " .. tostring(args.from))
  end },
} }
]]
local NO_CRON = [[
return { C = {
  tick = function(args, job) job.redis:call("RPUSH", "test:ticks", job.id) end,
  filetick = function(args, job) end,
} }
]]
local OTHER = [[
return { D = { other = function() end } }
]]

describe("cron", function()
  local r, o, dirs, workers
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
    assert(o:set_queue_type("C", "QUEUE"))
    workers, dirs = {}, {}
  end)
  after_each(function()
    for _, p in ipairs(workers) do if p then ws.stop_worker(p) end end
    for _, d in ipairs(dirs) do os.execute("rm -rf '" .. d .. "'") end
    r:close()
  end)

  local function dir_of(src)
    local d = ws.jobs_dir{ ["c.lua"] = src }
    dirs[#dirs + 1] = d
    return d
  end
  local function start(src, extra)
    local p = ws.start_worker(dir_of(src), extra)
    workers[#workers + 1] = p
    return p, #workers
  end
  local function stop(i)
    local code, out, err = ws.stop_worker(workers[i])
    workers[i] = false
    return code, out, err
  end
  local function server_s()
    local t = r:call("TIME")
    return tonumber(t[1]) + tonumber(t[2]) / 1e6
  end
  -- the tick (Unix seconds) of each job id cron:<name>:<tick> in list key, in order
  local function ticks(key, name)
    local out = {}
    for _, id in ipairs(r:call("LRANGE", key, 0, -1)) do
      local t = id:match("^cron:" .. name:gsub("%p", "%%%0") .. ":(%d+)")
      assert.is_truthy(t, "job id " .. id)
      out[#out + 1] = tonumber(t)
    end
    return out
  end

  it("makes exactly one job per tick with two workers over more than 10 ticks of @every 1s", function()
    start(JOBS)
    start(JOBS)
    local code, out = h.run_jobrt({ "cron", "add", "every", "C", "tick", "@every 1s" })
    assert.equal(0, code)
    assert.matches("^cron entry 'every' created: @every 1s job tick into queue 'C', UTC; next tick ", out)
    h.wait_for(function() return r:call("LLEN", "test:ticks") >= 11 end, 20, "11 ticks")
    assert.equal(0, (h.run_jobrt({ "cron", "delete", "every" })))
    h.wait_for(function() return o:stats("C").executing + o:stats("C").pending == 0 end, 5, "the last tick's job")
    local n = r:call("LLEN", "test:ticks")
    local t = ticks("test:ticks", "every")
    table.sort(t)
    for i = 2, #t do
      assert.equal(t[i - 1] + 1, t[i], ("ticks %d and %d: one job per second, each once"):format(t[i - 1], t[i]))
    end
    assert.is_true(#t >= 11)
    assert.equal(n, o:stats("C").completed)
    -- deleted: no tick after it
    local until_ = server_s() + 1.5
    h.wait_for(function() return server_s() > until_ end, 5, "a second and a half")
    assert.equal(n, r:call("LLEN", "test:ticks"))
    -- both workers tried every tick: each logged only the ticks whose job it made
    local logged = {}
    for i = 1, 2 do
      local _, _, err = stop(i)
      for id in err:gmatch("cron entry every: enqueued job (%S+)") do
        assert.is_nil(logged[id], id .. " logged twice")
        logged[id] = true
      end
    end
    local count = 0
    for _ in pairs(logged) do count = count + 1 end
    assert.equal(n, count)
  end)

  it("runs one catch-up job for the ticks missed while no worker ran, then goes on", function()
    local _, w = start(JOBS)
    assert.equal(0, (h.run_jobrt({ "cron", "add", "gap", "C", "tick", "@every 1s" })))
    h.wait_for(function() return r:call("LLEN", "test:ticks") >= 2 end, 10, "two ticks")
    stop(w)
    local stopped = server_s()
    local before = ticks("test:ticks", "gap")
    local last_before = before[#before]
    h.wait_for(function() return server_s() > stopped + 3.3 end, 10, "three ticks without a worker")
    local restart = server_s()
    start(JOBS)
    h.wait_for(function() return r:call("LLEN", "test:ticks") >= #before + 3 end, 10, "the catch-up and two ticks")
    local t = ticks("test:ticks", "gap")
    local catch = t[#before + 1]
    -- one job for the latest missed tick; the ones before it made none
    assert.is_true(catch >= math.floor(restart) - 1 and catch <= math.floor(restart) + 1, "catch-up tick " .. catch)
    assert.is_true(catch - last_before >= 3, ("no job for the %d missed ticks before %d"):format(catch - last_before - 1, catch))
    assert.equal(catch + 1, t[#before + 2])
    for i = 2, #t do assert.is_true(t[i] > t[i - 1]) end
  end)

  it("skips what was missed with --missed skip, and runs it once without", function()
    -- two yearly entries whose last tick was taken two years ago: both missed a New Year
    assert.equal(0, (h.run_jobrt({ "cron", "add", "y-skip", "C", "tick", "@yearly", "--missed", "skip" })))
    assert.equal(0, (h.run_jobrt({ "cron", "add", "y-once", "C", "tick", "@yearly" })))
    local two_years_ago = math.floor(server_s() - 2 * 366 * 86400) * 1000
    r:call("HSET", "jobrt:{C}:stats", "cron-last:y-skip", two_years_ago, "cron-last:y-once", two_years_ago)
    local _, w = start(JOBS)
    h.wait_for(function() return r:call("LLEN", "test:ticks") >= 1 end, 10, "the catch-up job")
    local y = tonumber(os.date("!%Y", math.floor(server_s())))
    local new_year = os.time({ year = y, month = 1, day = 1, hour = 0 }) - os.time({ year = 1970, month = 1, day = 1, hour = 0 })
    assert.same({ "cron:y-once:" .. new_year }, r:call("LRANGE", "test:ticks", 0, -1))
    -- the skipped entry took its tick too (no job): a restart makes nothing more
    assert.equal(tostring(new_year * 1000), r:call("HGET", "jobrt:{C}:stats", "cron-last:y-skip"))
    stop(w)
    start(JOBS)
    local _, out = h.run_jobrt({ "cron", "list" })
    assert.matches("y%-skip +C +tick +@yearly +UTC +{} +skip +cli", out)
    assert.equal(1, r:call("LLEN", "test:ticks"))
  end)

  it("registers the entries of job files, and removes them when no served file declares them", function()
    assert.equal(0, (h.run_jobrt({ "cron", "add", "mine", "C", "tick", "0 0 1 1 *" })))   -- a cli entry
    local p1, w1 = start(FILE_CRON)
    h.wait_for(function() return r:call("LLEN", "test:filetick") >= 2 end, 10, "two ticks of the file entry")
    assert.matches("^cron:C%.filetick:%d+ file$", r:call("LINDEX", "test:filetick", 0))
    local _, out = h.run_jobrt({ "cron", "list", "--json" })
    local list = cjson.decode(out)
    assert.equal(2, #list)
    assert.same({ "C.filetick", "C", "filetick", "@every 1s", "file" },
      { list[1].name, list[1].queue, list[1].job, list[1].schedule, list[1].source })
    assert.matches("c%.lua:%d+$", list[1].file)
    -- lost from Redis (a failover to a replica that missed it): the worker registers it again
    -- when it reconnects
    r:call("HDEL", "jobrt:{C}:stats", "cron:C.filetick", "cron-last:C.filetick")
    local killed = 0
    for _, port in ipairs(h.cluster and h.cluster:ports() or { false }) do   -- a cluster: every node
      local c = port and h.cluster:node(port) or r
      killed = killed + assert(c:call("CLIENT", "KILL", "TYPE", "pubsub"))
      if port then c:close() end
    end
    assert.is_true(killed >= 1)
    h.wait_for(function() return o:cron_entries("C")["C.filetick"] ~= nil end, 10, "the entry registered again")
    -- a cli entry cannot take the file entry's name
    local code, _, err = h.run_jobrt({ "cron", "add", "C.filetick", "C", "tick", "@hourly" })
    assert.equal(1, code)
    assert.matches("is declared in a job file", err)
    -- a worker of another queue leaves C's entries alone
    o:set_queue_type("D", "QUEUE")
    start(OTHER)
    local names = {}
    for name in pairs(o:cron_entries("C")) do names[#names + 1] = name end
    table.sort(names)
    assert.same({ "C.filetick", "mine" }, names)
    -- C served again without the cron: the file entry goes, the cli entry stays
    stop(w1)
    start(NO_CRON)
    h.wait_for(function() return o:cron_entries("C")["C.filetick"] == nil end, 5, "the file entry to go")
    assert.is_truthy(o:cron_entries("C").mine)
    local n = r:call("LLEN", "test:filetick")
    local until_ = server_s() + 1.5
    h.wait_for(function() return server_s() > until_ end, 5, "a second and a half")
    assert.equal(n, r:call("LLEN", "test:filetick"))
    assert(p1)
  end)

  it("gives the jobs of an LBQUEUE entry its name as jobHash: ticks merge while one runs, never two at once", function()
    assert(o:set_queue_type("L", "LBQUEUE"))
    start([[
local jobrt = require 'jobrt'
return { L = { slow = function(args, job)
  job.redis:call("RPUSH", "test:lb", "start " .. job.id .. " " .. job.hash)
  jobrt.sleep(1.6)
  job.redis:call("RPUSH", "test:lb", "end " .. job.id)
end } }
]], { "--concurrency", "5" })
    assert.equal(0, (h.run_jobrt({ "cron", "add", "lbtick", "L", "slow", "@every 1s" })))
    h.wait_for(function() return r:call("LLEN", "test:lb") >= 6 end, 15, "three runs")
    assert.equal(0, (h.run_jobrt({ "cron", "delete", "lbtick" })))
    local last_tick = math.floor(server_s())
    local log = r:call("LRANGE", "test:lb", 0, -1)
    local running = 0
    for _, e in ipairs(log) do
      if e:match("^start") then
        running = running + 1
        assert.matches("^start cron:lbtick:%d+ lbtick$", e)
      else
        running = running - 1
      end
      assert.is_true(running <= 1, "two jobs of the entry ran at once: " .. table.concat(log, ", "))
    end
    -- fewer jobs than ticks: the ticks that came while one ran merged into the waiting one
    local first_tick = tonumber(log[1]:match(":(%d+) "))
    local st = o:stats("L")
    local jobs = st.completed + st.executing + st.pending + st.parked
    assert.is_true(jobs < last_tick - first_tick + 1, jobs .. " jobs for " .. (last_tick - first_tick + 1) .. " ticks")
  end)

  it("refuses a job file whose cron is malformed, naming the file, the line and the fix", function()
    local cases = {
      { "cron = '61 * * * *'", "c.lua:2: C.t.cron: cron expression '61 * * * *': minute field '61': 61 is out of range 0-59" },
      { "cron = { '@hourly', tz = 'Mars/Olympus' }", "c.lua:2: C.t.cron: unknown time zone 'Mars/Olympus'" },
      { "cron = { '@hourly', missed = 'all' }", "c.lua:2: C.t.cron.missed must be 'once' (one run for the ticks missed while no worker ran) or 'skip', got all" },
      { "cron = { '@hourly', colour = 'red' }", "c.lua:2: C.t.cron has unknown field 'colour' (known: [1] the expression, tz, args, missed, hash)" },
      { "cron = 5", "c.lua:2: C.t.cron must be a cron expression" },
    }
    for _, c in ipairs(cases) do
      local d = dir_of("return { C = {\n  t = { handler = function() end, " .. c[1] .. " },\n} }\n")
      local code, _, err = h.run_jobrt({ "work", d })
      assert.equal(1, code, c[1])
      assert.matches(c[2], err, 1, true)
    end
  end)

  it("checks what cron add is given, naming the fix", function()
    local cases = {
      { { "cron", "add", "n", "C", "tick" }, 2, "jobrt cron add: missing 'EXPR': usage: jobrt cron add NAME QUEUE JOB 'EXPR' [JSON-ARGS] (see jobrt cron add --help)\n" },
      { { "cron", "add", "n", "C", "tick", "* * * *" }, 2, "jobrt cron add: cron expression '* * * *': needs 5 fields (minute hour day-of-month month day-of-week), got 4\n" },
      { { "cron", "add", "n", "C", "tick", "@every 1s", "{x" }, 2, nil },
      { { "cron", "add", "n", "C", "tick", "@every 1s", "--tz", "Europe/Nowhere" }, 2,
        "jobrt cron add: unknown time zone 'Europe/Nowhere': no file /usr/share/zoneinfo/Europe/Nowhere (use a tz database name such as Europe/Berlin or UTC; they come with Debian's tzdata package)\n" },
      { { "cron", "add", "n", "C", "tick", "@every 1s", "--missed", "twice" }, 2,
        "jobrt cron add: --missed must be 'once' (one run for the ticks missed while no worker ran) or 'skip', got 'twice'\n" },
      { { "cron", "add", "n", "C", "tick", "@every 1s", "--id-prefix", "123" }, 2, nil },
      { { "cron", "add", "n{x}", "C", "tick", "@every 1s" }, 2,
        "jobrt cron add: name must not contain control characters (newline, tab...) or '{' '}' (got 'n{x}', with '{' at byte 2)\n" },
      { { "cron", "add", "n", "NOTYPE", "tick", "@every 1s" }, 1,
        "jobrt cron add: queue 'NOTYPE' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type NOTYPE QUEUE|LBQUEUE|DELQUEUE\n" },
      { { "cron", "delete", "nothing" }, 1, "jobrt cron delete: no cron entry 'nothing' (jobrt cron list shows them)\n" },
      { { "cron", "frob" }, 2, "jobrt cron: unknown action 'frob': use add, list or delete (see jobrt cron --help)\n" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = h.run_jobrt(c[1])
      assert.equal(c[2], code, table.concat(c[1], " ") .. ": " .. err)
      assert.equal("", out)
      if c[3] then assert.equal(c[3], err) else assert.matches("^jobrt cron add: ", err) end
    end
    -- a name one queue uses is refused for another
    o:set_queue_type("D", "QUEUE")
    assert.equal(0, (h.run_jobrt({ "cron", "add", "n", "C", "tick", "@hourly" })))
    local code, _, err = h.run_jobrt({ "cron", "add", "n", "D", "tick", "@hourly" })
    assert.equal(1, code)
    assert.equal("jobrt cron add: cron entry 'n' belongs to queue 'C': delete it first (jobrt cron delete n) or pick another name\n", err)
    local _, out = h.run_jobrt({ "cron", "add", "n", "C", "tick", "@hourly" })
    assert.matches("^cron entry 'n' unchanged", out)
  end)
end)
