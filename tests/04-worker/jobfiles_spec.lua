-- Job files that organise like real code (jobrt.jobfiles): helper modules in lib/ folders are
-- never served and are found by require; and queue types declared where the jobs are
-- (`_type`, jobrt.queuetypes): stored on a clean Redis, refused when they conflict.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'

-- A directory with files { ["path/in/dir.lua"] = source }; returns its path.
local function tree(files)
  local dir = h.tmpdir()
  for name, src in pairs(files) do
    local sub = name:match('^(.*)/[^/]*$')
    if sub then assert(os.execute("mkdir -p '" .. dir .. '/' .. sub .. "'") == 0) end
    local f = assert(io.open(dir .. '/' .. name, 'w'))
    f:write(src)
    f:close()
  end
  return dir
end

local function rm(dir) os.execute("rm -rf '" .. dir .. "'") end

-- Loads the job files under paths in a child jobrt (as `jobrt work` does), printing what was
-- found: code, stdout, stderr.
local function load_in_child(paths)
  local code = [[
    local jf = require 'jobrt.jobfiles'
    local desc, err, info = jf.load(arg)
    if not desc then io.stderr:write(err, '\n') return 1 end
    local names = {}
    for q, jobs in pairs(desc) do for j in pairs(jobs) do names[#names + 1] = q .. '.' .. j end end
    table.sort(names)
    print('jobs ' .. table.concat(names, ' '))
    for _, f in ipairs(info.files) do print('file ' .. f) end
    local t = {}
    for q, d in pairs(info.types) do t[#t + 1] = q .. '=' .. d.type .. '@' .. d.source end
    table.sort(t)
    print('types ' .. table.concat(t, ' '))
    return 0
  ]]
  local a = { '-e', code }
  for _, p in ipairs(paths) do a[#a + 1] = p end
  return h.run_jobrt(a)
end

-- Starts `jobrt work ...` and waits until it has registered; returns the process.
local function start_worker(args, q)
  local a = { 'work' }
  for _, x in ipairs(args) do a[#a + 1] = x end
  a[#a + 1] = '--redis'
  a[#a + 1] = h.url
  local p = h.spawn_jobrt(a)
  h.wait_for(function() return #q:workers() >= 1 or p:exited() end, 10, 'the worker to register')
  assert(not p:exited(), 'the worker exited: ' .. select(2, p:output()))
  return p
end

local function stop(p)
  p:kill('SIGTERM')
  local code = p:wait()
  local out, err = p:output()
  return code, out, err
end

describe('job files', function()
  setup(function() jobrt.set_log_level('warn') end)
  teardown(function() jobrt.set_log_level('info') end)

  describe('and helper modules in lib/ folders', function()
    local dir
    after_each(function() if dir then rm(dir) end dir = nil end)

    it('a job file requires a helper from lib/ beside it; lib/ is never served', function()
      dir = tree{
        ['greet.lua'] = "local util = require 'util'\nreturn { GREET = { hello = function(args) return util.shout(args.name) end } }",
        -- a helper that even looks like a jobDescription: still never served
        ['lib/util.lua'] = "return { shout = function(s) return s:upper() .. '!' end, HELPERQ = { x = function() end } }",
        ['lib/deeper/more.lua'] = "return { HELPERQ2 = { y = function() end } }",
      }
      local code, out, err = load_in_child({ dir })
      assert.equal(0, code, err)
      assert.matches('jobs GREET.hello\n', out, 1, true)
      assert.matches('file ' .. dir .. '/greet.lua\n', out, 1, true)
      assert.is_nil(out:find('lib/', 1, true), out)
    end)

    it('lib/ folders at any depth are helpers, reached with dotted names; nested job files are served', function()
      dir = tree{
        ['billing/invoice.lua'] = "local money = require 'billing.lib.money'\nlocal util = require 'lib.util'\n" ..
          "return { BILL = { invoice = function(a) return util.id(money.cents(a.eur)) end } }",
        ['billing/lib/money.lua'] = "return { cents = function(e) return e * 100 end }",
        ['lib/util.lua'] = "return { id = function(x) return x end }",
        ['.hidden/skip.lua'] = "error('hidden folders are skipped')",
      }
      local code, out, err = load_in_child({ dir .. '/' })
      assert.equal(0, code, err)
      assert.equal('jobs BILL.invoice\nfile ' .. dir .. '/billing/invoice.lua\ntypes \n', out)
    end)

    it('a job file cannot be required as a module: the message names it and the fix', function()
      dir = tree{
        ['a.lua'] = "local b = require 'b'\nreturn { A = { j = function() end } }",
        ['b.lua'] = "return { B = { k = function() end } }",
      }
      local code, _, err = load_in_child({ dir })
      assert.equal(1, code)
      assert.matches("^[^\n]*/a%.lua: error while loading: [^\n]*require 'b' found " .. dir:gsub('%p', '%%%0') ..
        "/b%.lua, which is a job file %(served by jobrt, never a module%): move the shared code to a lib/ folder, e%.g%. " ..
        dir:gsub('%p', '%%%0') .. "/lib/b%.lua, and require that", err)
    end)

    it('a helper that is missing: the message says where helpers go', function()
      dir = tree{ ['a.lua'] = "local u = require 'nosuchhelper'\nreturn { A = { j = function() end } }" }
      local code, _, err = load_in_child({ dir })
      assert.equal(1, code)
      assert.matches("module 'nosuchhelper' not found", err, 1, true)
      assert.matches("(helper modules live in a lib/ folder beside the job files: " .. dir ..
        "/lib/nosuchhelper.lua is found as require 'nosuchhelper')", err, 1, true)
    end)

    it('a file or folder named inside lib/ on the command line is refused, not served', function()
      dir = tree{ ['lib/util.lua'] = "return { Q = { j = function() end } }", ['a.lua'] = "return { A = { j = function() end } }" }
      local code, _, err = load_in_child({ dir .. '/lib/util.lua' })
      assert.equal(1, code)
      assert.equal(dir .. "/lib/util.lua is in a lib/ folder, where helper modules live (never served): name the job files that require it, or their folder\n", err)
      code, _, err = load_in_child({ dir .. '/lib/' })
      assert.equal(1, code)
      assert.equal(dir .. "/lib/ is a lib/ folder, where helper modules live (never served): serve the folder that holds it\n", err)
    end)

    it('served file by file, its folder lib/ is on the path too', function()
      dir = tree{
        ['one.lua'] = "return { ONE = { j = function() return require('util').v end } }",
        ['lib/util.lua'] = "return { v = 42 }",
      }
      local code, out, err = load_in_child({ dir .. '/one.lua' })
      assert.equal(0, code, err)
      assert.matches('jobs ONE.j', out, 1, true)
    end)

    it('end to end: the worker serves a job that uses a helper', function()
      h.flush()
      local q = jobrt.connect(h.url)
      dir = tree{
        ['greet.lua'] = "local util = require 'util'\nreturn { GREET = { _type = 'QUEUE', hello = function(args) return util.shout(args.name) end } }",
        ['lib/util.lua'] = "return { shout = function(s) return s:upper() .. '!' end }",
      }
      local p = start_worker({ dir }, q)
      assert.equal('ANN!', q:run('GREET', 'hello', { name = 'ann' }, { wait = 5 }))
      assert.equal('GREET', q:workers()[1].queues)
      assert.equal(0, (stop(p)))
      q:close()
    end)
  end)

  describe('declare their queue type with _type', function()
    local q, dir
    before_each(function()
      h.flush()
      q = jobrt.connect(h.url)
    end)
    after_each(function()
      q:close()
      if dir then rm(dir) end
      dir = nil
    end)

    it('stored in RESERVED:QCONFIG on a clean Redis, and the queue is served', function()
      dir = tree{ ['mail.lua'] = "return {\n  MAIL = {\n    _type = 'DELQUEUE',\n    send = function(a) return a end,\n  },\n}" }
      local p = start_worker({ dir }, q)
      assert.equal('DELQUEUE', q:queueType('MAIL'))
      assert.same({ x = 1 }, q:run('MAIL', 'send', { x = 1 }, { wait = 5 }))
      local code, _, err = stop(p)
      assert.equal(0, code)
      assert.matches('info: queue MAIL: type DELQUEUE stored in RESERVED:QCONFIG (declared by _type in ' .. dir .. '/mail.lua:3)', err, 1, true)
    end)

    it('each queue of a file names the line of its own _type', function()
      dir = tree{ ['book.lua'] = "local jobrt = require 'jobrt'\nreturn {\n  PAGES = {\n    _type = 'QUEUE',\n    render = function() end,\n  },\n  ['BOOK.x'] = { _type = 'DELQUEUE',\n    assemble = function() end },\n  SHIP = {\n    send = function() end,\n\n    _type = 'QUEUE',\n  },\n}" }
      local p = start_worker({ dir }, q)
      local code, _, err = stop(p)
      assert.equal(0, code)
      assert.matches('queue PAGES: type QUEUE stored in RESERVED:QCONFIG (declared by _type in ' .. dir .. '/book.lua:4)', err, 1, true)
      assert.matches('queue BOOK.x: type DELQUEUE stored in RESERVED:QCONFIG (declared by _type in ' .. dir .. '/book.lua:7)', err, 1, true)
      assert.matches('queue SHIP: type QUEUE stored in RESERVED:QCONFIG (declared by _type in ' .. dir .. '/book.lua:12)', err, 1, true)
    end)

    it('the same type already stored: served, nothing written', function()
      q:queueType('MAIL', 'DELQUEUE')
      dir = tree{ ['mail.lua'] = "return { MAIL = { _type = 'DELQUEUE', send = function() end } }" }
      local p = start_worker({ dir }, q)
      local code, _, err = stop(p)
      assert.equal(0, code)
      assert.is_nil(err:find('stored in RESERVED:QCONFIG', 1, true))
    end)

    it('a different type stored: refused, naming both, and nothing served or changed', function()
      q:queueType('MAIL', 'QUEUE')
      dir = tree{ ['mail.lua'] = "return {\n  MAIL = {\n    send = function() end,\n    _type = 'DELQUEUE',\n  },\n}" }
      local code, out, err = h.run_jobrt({ 'work', dir, '--redis', h.url })
      assert.equal(1, code)
      assert.equal('', out)
      assert.equal("jobrt: queue 'MAIL' is declared DELQUEUE in " .. dir .. "/mail.lua:4 but RESERVED:QCONFIG says QUEUE: " ..
        "change _type in the file, or change the queue's type with  jobrt queue-type MAIL DELQUEUE  (refused while the queue holds jobs, unless --force)\n", err)
      assert.equal('QUEUE', q:queueType('MAIL'))
      assert.equal(0, #q:workers())
    end)

    it('two workers starting at once with different types: one stores its type, the other is refused', function()
      local d1 = tree{ ['a.lua'] = "return { RACE = { _type = 'QUEUE', j = function() end } }" }
      local d2 = tree{ ['b.lua'] = "return { RACE = { _type = 'LBQUEUE', j = function() end } }" }
      local p1 = h.spawn_jobrt({ 'work', d1, '--redis', h.url })
      local p2 = h.spawn_jobrt({ 'work', d2, '--redis', h.url })
      h.wait_for(function() return p1:exited() or p2:exited() end, 10, 'one worker to be refused')
      h.wait_for(function() return #q:workers() == 1 end, 10, 'the other worker to serve')
      local winner, loser = p1, p2
      if p1:exited() then winner, loser = p2, p1 end
      local stored = q:queueType('RACE')
      assert.equal(1, (loser:wait()))
      local _, lerr = loser:output()
      local declared = stored == 'QUEUE' and 'LBQUEUE' or 'QUEUE'
      assert.matches("queue 'RACE' is declared " .. declared .. " in [^\n]* but RESERVED:QCONFIG says " .. stored, lerr)
      assert.equal(0, (stop(winner)))
      rm(d1)
      rm(d2)
    end)

    it('two files declaring different types for one queue: refused, naming both files', function()
      dir = tree{ ['a.lua'] = "return { Q = { _type = 'QUEUE', j = function() end } }",
                  ['b.lua'] = "return { Q = { _type = 'LBQUEUE', k = function() end } }" }
      local code, _, err = load_in_child({ dir })
      assert.equal(1, code)
      assert.equal("queue 'Q' is declared QUEUE in " .. dir .. "/a.lua:1 and LBQUEUE in " .. dir ..
        "/b.lua:1: declare one type (or declare it in one file only)\n", err)
    end)

    local bad = {
      { 'a misspelt setting', "return {\n  Q = {\n    _tpye = 'QUEUE', j = function() end } }",
        "/a.lua:3: Q._tpye: keys starting with '_' are settings of the queue, not jobs, and '_tpye' is not one (known: _type)\n" },
      { 'an unknown type', "return { Q = { _type = 'FIFO', j = function() end } }",
        "/a.lua:1: Q._type must be 'QUEUE', 'LBQUEUE' or 'DELQUEUE', got 'FIFO'\n" },
      { 'a type in small letters', "return { Q = { _type = 'lbqueue', j = function() end } }",
        "/a.lua:1: Q._type must be 'QUEUE', 'LBQUEUE' or 'DELQUEUE', got 'lbqueue' (write it in capitals: 'LBQUEUE')\n" },
      { 'type without the underscore', "return { Q = {\n type = 'LBQUEUE', j = function() end } }",
        "/a.lua:2: Q.type = 'LBQUEUE' looks like the queue's type: write _type = 'LBQUEUE' (keys starting with '_' are settings; a job is a function)\n" },
      { 'a queue with a type and no jobs', "return {\n  Q = { _type = 'QUEUE' } }",
        "/a.lua:2: queue Q has no jobs: add one, e.g. Q = { myJob = function(args, job) ... end }\n" },
    }
    for _, case in ipairs(bad) do
      it(case[1] .. ': one message with file:line', function()
        dir = tree{ ['a.lua'] = case[2] }
        local code, _, err = load_in_child({ dir })
        assert.equal(1, code)
        assert.equal(dir .. case[3], err)
      end)
    end

    it('a Redis restarted without its data gets the declared type back from the worker', function()
      local s = h.start_redis()
      dir = tree{ ['a.lua'] = "return { BACK = { _type = 'DELQUEUE', j = function(a) return a end } }" }
      local p = h.spawn_jobrt({ 'work', dir, '--redis', s.url })
      local q2 = jobrt.connect(s.url)
      h.wait_for(function() return #q2:workers() == 1 end, 10, 'the worker')
      q2:close()
      s:restart()                          -- no AOF: RESERVED:QCONFIG is gone
      q2 = jobrt.connect(s.url)
      -- the worker reconnects, finds the queue without a type, and stores its _type again
      h.wait_for(function() return q2:queueType('BACK') == 'DELQUEUE' end, 15, 'the type to come back')
      assert.same({ n = 1 }, q2:run('BACK', 'j', { n = 1 }, { wait = 10 }))
      q2:close()
      local code = stop(p)
      s:stop()
      assert.equal(0, code)
    end)

    it('q:registerWorker takes _type too', function()
      local w = q:registerWorker(h.url, { REG = { _type = 'LBQUEUE', j = function(a) return a.n end } })
      assert.equal('LBQUEUE', q:queueType('REG'))
      assert.equal(3, q:run('REG', 'j', { n = 3 }, { jobHash = 'h', wait = 5 }))
      w:stop()
    end)

    it('job names starting with _ are refused by the client and the command line', function()
      q:queueType('Q', 'QUEUE')
      local ok, err = pcall(q.enqueueJob, q, 'Q', '_type', {})
      assert.is_false(ok)
      assert.equal("enqueueJob: job names must not start with '_' ('_type'): in job files such keys are settings of the queue, like _type", err)
      local code, _, cerr = h.run_jobrt({ 'enqueue', 'Q', '_x', '--redis', h.url })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: job names must not start with '_' ('_x'): in job files such keys are settings of the queue, like _type\n", cerr)
      code, _, cerr = h.run_jobrt({ 'enqueue', 'Q', '-', '--redis', h.url }, { stdin = '{"job":"ok"}\n{"job":"_y"}\n' })
      assert.equal(2, code)
      assert.equal("jobrt enqueue: line 2 of stdin: job names must not start with '_' ('_y'): in job files such keys are settings of the queue, like _type\n", cerr)
      assert.equal(0, q:stats('Q').pending)
    end)
  end)
end)
