-- Hot reload (`jobrt work --watch`, SIGHUP): the job files are edited while jobs run, in one
-- process and under --procs; no job is lost, none runs on a mix of old and new code, new jobs
-- are served, removed queues are reserved no more while their jobs in flight finish, a file
-- that fails to load keeps the previous definitions (and says file:line), and under --procs
-- the children are replaced one at a time so that serving never stops.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local proc = require 'jobrt.core.proc'

-- Writes `src` to dir/name atomically (a new file renamed over the old one, as editors do).
local function put(dir, name, src)
  local sub = name:match('^(.*)/[^/]*$')
  if sub then assert(os.execute("mkdir -p '" .. dir .. '/' .. sub .. "'") == 0) end
  local tmp = dir .. '/' .. name .. '.tmp~'
  local f = assert(io.open(tmp, 'w'))
  f:write(src)
  f:close()
  assert(os.rename(tmp, dir .. '/' .. name))
end

local function rm(dir) os.execute("rm -rf '" .. dir .. "'") end

-- lib/ver.lua of version v: the helper the job file requires at its top.
local function helper(v) return ("return { V = %d }\n"):format(v) end

-- The job file of version v. Each job notes in the list reload:log, when it starts and when
-- it ends, the version of the job file and of the helper it runs with (and its pid). A job
-- with args.hold waits for reload:go:<id> before it ends; others take args.ms milliseconds.
-- extra: more queues, as Lua source ("NAME = { ... },").
local function jobfile(v, extra, top)
  return ([[
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ver = require 'ver'
local FILE = %d
%s
local function note(job, what)
  job.redis:call('RPUSH', 'reload:log', cjson.encode({ id = job.id, q = job.queue, a = job.attempt,
    what = what, file = FILE, lib = ver.V, pid = jobrt.pid(), t = jobrt.now() }))
end
local function work(args, job)
  note(job, 'start')
  if args.hold then
    job.redis:call('BLPOP', 'reload:go:' .. job.id, 60)
  else
    jobrt.sleep((args.ms or 10) / 1000)
  end
  note(job, 'end')
  return { file = FILE, lib = ver.V }
end
return {
  RL = { _type = 'QUEUE', work = work },
  %s
}
]]):format(v, top or '', extra or '')
end

-- Every note so far, decoded.
local function notes(r)
  local out = {}
  for _, s in ipairs(r:call('LRANGE', 'reload:log', 0, -1)) do out[#out + 1] = cjson.decode(s) end
  return out
end

local function find(list, pred)
  for _, n in ipairs(list) do if pred(n) then return n end end
end

-- The workers a spec started: killed after it, whatever happened (so that a failed spec's
-- worker serves no later spec's jobs).
local started = {}

-- Starts `jobrt work dir OPTS`; returns the process once `n` workers serve `queues`.
local function start(dir, opts, q, queues, n)
  local a = { 'work', dir, '--redis', h.url }
  for _, o in ipairs(opts) do a[#a + 1] = o end
  local p = h.spawn_jobrt(a)
  started[#started + 1] = p
  h.wait_for(function()
    if p:exited() then error('the worker exited: ' .. select(2, p:output())) end
    local c = 0
    for _, w in ipairs(q:workers()) do if w.queues == queues then c = c + 1 end end
    return c >= (n or 1)
  end, 15, 'the worker to serve ' .. queues)
  return p
end

-- Waits until every live worker serves `queues` (and at least one does).
local function serving(q, queues, p, what)
  h.wait_for(function()
    if p:exited() then error('the worker exited: ' .. select(2, p:output())) end
    local ws = q:workers()
    if #ws == 0 then return false end
    for _, w in ipairs(ws) do if w.queues ~= queues then return false end end
    return true
  end, 20, what or ('the workers to serve ' .. queues))
end

local function stderr_has(p, text, what)
  h.wait_for(function()
    if p:exited() then error('the worker exited: ' .. select(2, p:output())) end
    return select(2, p:output()):find(text, 1, true)
  end, 20, what or text)
end

local function stop(p)
  if not p:exited() then p:kill('SIGTERM') end
  local code = p:wait()
  local out, err = p:output()
  return code, out, err
end

-- Keeps enqueueing short RL jobs (one every 10 ms) until feeder.stop is set; feeder.ids.
local function feeder(q)
  local f = { ids = {}, stop = false, done = jobrt.cond() }
  jobrt.spawn(function()
    while not f.stop do
      f.ids[#f.ids + 1] = q:enqueueJob('RL', 'work', { ms = 20 })
      jobrt.sleep(0.01)
    end
    f.stopped = true
    f.done:broadcast()
  end)
  function f:finish()
    self.stop = true
    while not self.stopped do self.done:wait(1) end
  end
  return f
end

-- Checks that every one of `ids` finished successfully, and that every attempt's start and
-- end ran the same code: the job file's and the helper's versions agree, from start to end.
-- Returns the notes per id.
local function check_all(q, r, ids)
  h.wait_for(function()
    for _, id in ipairs(ids) do
      local rec = q:getJob('RL', id)
      if not rec or rec.state ~= 'finished' then return false end
    end
    return true
  end, 30, 'every job to finish')
  local by = {}
  for _, n in ipairs(notes(r)) do
    local k = n.q .. ':' .. n.id
    by[k] = by[k] or {}
    by[k][#by[k] + 1] = n
  end
  for _, id in ipairs(ids) do
    local rec = q:getJob('RL', id)
    assert.equal('successful', rec.result, 'job ' .. id .. ': ' .. tostring(rec['error-reason']))
    local ns = by['RL:' .. id]
    assert.is_truthy(ns, 'job ' .. id .. ' left no notes')
    local start = find(ns, function(n) return n.what == 'start' end)
    local fin = find(ns, function(n) return n.what == 'end' and n.a == start.a end)
    assert.is_truthy(fin, 'job ' .. id .. ' has no end note')
    assert.equal(start.file, start.lib, 'job ' .. id .. ' started on job file v' .. start.file .. ' with helper v' .. start.lib)
    assert.same({ start.file, start.lib, start.pid }, { fin.file, fin.lib, fin.pid },
      'job ' .. id .. ' started and ended on different code')
    local value = cjson.decode(rec['result-value'])
    assert.same({ file = start.file, lib = start.lib }, value)
  end
  return by
end

describe('hot reload', function()
  local q, r, dir
  setup(function() jobrt.set_log_level('warn') end)
  teardown(function() jobrt.set_log_level('info') end)
  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
    r = h.redis()
    dir = h.tmpdir()
  end)
  after_each(function()
    for _, p in ipairs(started) do
      if not p:exited() then
        p:kill('SIGKILL')
        p:wait()
      end
    end
    started = {}
    -- a --procs supervisor killed leaves its children (they would stop gracefully once they
    -- notice): kill them too
    for _, w in ipairs(q:workers()) do
      local pid = tonumber(w.pid)
      if pid and pid ~= jobrt.pid() then proc.kill(pid, 9) end
    end
    q:close()
    r:close()
    rm(dir)
  end)

  it('--watch: an edit while jobs run; none lost, none on mixed code, in-flight jobs finish on theirs, new jobs served', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = start(dir, { '--watch', '--concurrency', '20' }, q, 'RL')
    -- a job that is still running when the files change
    local held = q:enqueueJob('RL', 'work', { hold = true })
    h.wait_for(function() return find(notes(r), function(n) return n.id == held end) end, 10, 'the held job to start')
    local f = feeder(q)
    h.wait_for(function() return #notes(r) > 20 end, 10, 'jobs to run on version 1')
    -- version 2 of the helper and of the job file, which also brings a new queue
    put(dir, 'lib/ver.lua', helper(2))
    put(dir, 'a.lua', jobfile(2, "RL2 = { _type = 'QUEUE', two = function(args) return 'two' end },"))
    serving(q, 'RL,RL2', p)
    h.wait_for(function() return find(notes(r), function(n) return n.file == 2 end) end, 10, 'a job on version 2')
    assert.equal('two', q:run('RL2', 'two', {}, { wait = 10 }))
    -- the held job started on version 1 and is still running: it ends on version 1
    r:call('RPUSH', 'reload:go:' .. held, 'go')
    f:finish()
    local ids = f.ids
    ids[#ids + 1] = held
    local by = check_all(q, r, ids)
    local hn = by['RL:' .. held]
    assert.same({ 1, 1 }, { hn[1].file, hn[1].lib })
    assert.same({ 'end', 1, 1 }, { hn[2].what, hn[2].file, hn[2].lib })
    assert.is_true(hn[2].t > find(notes(r), function(n) return n.file == 2 end).t,
      'the held job ended after version 2 served')
    -- both versions ran jobs of the stream, and the last ones ran version 2
    local seen = {}
    for _, id in ipairs(f.ids) do seen[by['RL:' .. id][1].file] = true end
    assert.same({ [1] = true, [2] = true }, seen)
    assert.equal(2, by['RL:' .. f.ids[#f.ids - 1]][1].file)
    local code, _, err = stop(p)
    assert.equal(0, code, err)
    assert.matches('reloading job files (' .. dir .. '/a.lua, ' .. dir .. '/lib/ver.lua changed)', err, 1, true)
    assert.matches('reloaded job files: serving RL, RL2; new: RL2', err, 1, true)
    assert.equal(1, select(2, err:gsub('reloading job files', '')), 'one reload for the burst of edits:\n' .. err)
  end)

  it('a removed queue is reserved no more; its job in flight finishes and reports', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1, "GONE = { _type = 'QUEUE', work = work },"))
    local p = start(dir, { '--watch' }, q, 'GONE,RL')
    local g1 = q:enqueueJob('GONE', 'work', { hold = true })
    h.wait_for(function() return find(notes(r), function(n) return n.id == g1 and n.q == 'GONE' end) end, 10, 'GONE job to start')
    put(dir, 'a.lua', jobfile(1))
    serving(q, 'RL', p)
    local g2 = q:enqueueJob('GONE', 'work', { ms = 1 })
    -- a job enqueued after it, in a queue still served, runs: the worker serves, and GONE's
    -- job is left alone
    assert.same({ file = 1, lib = 1 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    assert.equal('pending', q:getJob('GONE', g2).state)
    -- the job in flight finishes, its result is stored
    r:call('RPUSH', 'reload:go:' .. g1, 'go')
    h.wait_for(function() return q:getJob('GONE', g1).state == 'finished' end, 10, 'the GONE job in flight to finish')
    local rec = q:getJob('GONE', g1)
    assert.equal('successful', rec.result)
    assert.same({ file = 1, lib = 1 }, cjson.decode(rec['result-value']))
    stderr_has(p, 'queue GONE: its last job in flight has ended (the queue is no longer served)')
    assert.equal('pending', q:getJob('GONE', g2).state)
    -- served again: the waiting job runs
    put(dir, 'a.lua', jobfile(1, "GONE = { _type = 'QUEUE', work = work },"))
    h.wait_for(function() return q:getJob('GONE', g2).state == 'finished' end, 10, 'GONE served again')
    local code, _, err = stop(p)
    assert.equal(0, code, err)
    assert.matches('no longer served: GONE (their jobs in flight finish first)', err, 1, true)
  end)

  it('a file that fails to load keeps the previous definitions and logs file:line; fixed, it is served', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = start(dir, { '--watch' }, q, 'RL')
    -- a syntax error on line 3
    put(dir, 'a.lua', "return {\n  RL = {\n    work = function(args) return 1 end\n")
    stderr_has(p, 'error: reload failed, still serving the previous job definitions: ' .. dir .. "/a.lua:4: '}' expected")
    assert.same({ file = 1, lib = 1 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    -- an error raised while the file runs, on line 2
    put(dir, 'a.lua', "local x = 1\nerror('not today')\n")
    stderr_has(p, dir .. '/a.lua: error while loading: ' .. dir .. '/a.lua:2: not today')
    assert.same({ file = 1, lib = 1 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    -- a broken helper, the job file fine
    put(dir, 'lib/ver.lua', "return { V = 3 \n")
    put(dir, 'a.lua', jobfile(3))
    stderr_has(p, dir .. '/lib/ver.lua:2:')
    assert.same({ file = 1, lib = 1 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    -- a definition the worker refuses: a type that conflicts with the stored one
    q:queueType('OTHER', 'LBQUEUE')
    put(dir, 'lib/ver.lua', helper(3))
    put(dir, 'a.lua', jobfile(3, "OTHER = { _type = 'QUEUE', j = function() end },"))
    stderr_has(p, "reload failed, still serving the previous job definitions: queue 'OTHER' is declared QUEUE in " .. dir .. '/a.lua:')
    assert.same({ file = 1, lib = 1 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    -- fixed: the helper that failed before loads now (no "loop or previous error")
    put(dir, 'a.lua', jobfile(3))
    h.wait_for(function() return q:run('RL', 'work', { ms = 1 }, { wait = 10 }).file == 3 end, 10, 'version 3')
    assert.same({ file = 3, lib = 3 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    assert.equal('LBQUEUE', q:queueType('OTHER'))
    local code, _, err = stop(p)
    assert.equal(0, code, err)
  end)

  it('Redis down during a reload: the reload is tried again until Redis answers', function()
    local srv = h.start_redis()
    local q2 = jobrt.connect(srv.url)
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = h.spawn_jobrt({ 'work', dir, '--redis', srv.url, '--watch' })
    started[#started + 1] = p
    h.wait_for(function() return #q2:workers() == 1 end, 10, 'the worker')
    srv:kill()
    put(dir, 'a.lua', jobfile(1, "RL2 = { _type = 'QUEUE', two = function() return 2 end },"))
    stderr_has(p, 'reload failed, still serving the previous job definitions: E')
    stderr_has(p, '(trying again in 2s)')
    srv:restart()
    stderr_has(p, 'reloaded job files: serving RL, RL2; new: RL2')
    assert.equal(2, q2:run('RL2', 'two', {}, { wait = 10 }))
    q2:close()
    local code, _, err = stop(p)
    srv:stop()
    assert.equal(0, code, err)
  end)

  it('SIGHUP reloads without --watch', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = start(dir, {}, q, 'RL')
    put(dir, 'lib/ver.lua', helper(2))
    put(dir, 'a.lua', jobfile(2, "RL2 = { _type = 'QUEUE', two = function() return 2 end },"))
    p:kill('SIGHUP')
    serving(q, 'RL,RL2', p)
    assert.same({ file = 2, lib = 2 }, q:run('RL', 'work', { ms = 1 }, { wait = 10 }))
    assert.equal(2, q:run('RL2', 'two', {}, { wait = 10 }))
    local code, _, err = stop(p)
    assert.equal(0, code, err)
    assert.matches('reloading job files (SIGHUP)', err, 1, true)
  end)

  it('cron entries declared in the files follow a reload', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = start(dir, { '--watch' }, q, 'RL')
    assert.same({}, q:listCron())
    -- a job with a schedule: registered, and ticking
    put(dir, 'a.lua', jobfile(2, "CR = { _type = 'QUEUE', tick = { cron = '@every 1s', handler = function() return 't' end } },"))
    h.wait_for(function() return #q:listCron() == 1 end, 10, 'the cron entry')
    local e = q:listCron()[1]
    assert.same({ 'CR.tick', 'CR', 'tick', 'file' }, { e.name, e.queue, e.job, e.source })
    h.wait_for(function() return (q:stats('CR').completed or 0) >= 1 end, 10, 'a tick to run')
    -- the schedule taken out of the file: the entry goes
    put(dir, 'a.lua', jobfile(2, "CR = { _type = 'QUEUE', tick = function() return 't' end },"))
    h.wait_for(function() return #q:listCron() == 0 end, 10, 'the cron entry to go')
    local code, _, err = stop(p)
    assert.equal(0, code, err)
    assert.matches('cron entry CR.tick removed: no job file declares it any more', err, 1, true)
  end)

  it('new files and folders under the served folder are watched and served', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = start(dir, { '--watch' }, q, 'RL')
    put(dir, 'deep/er/b.lua', "return { NEWQ = { _type = 'QUEUE', b = function() return 'b' end } }")
    serving(q, 'NEWQ,RL', p)
    assert.equal('b', q:run('NEWQ', 'b', {}, { wait = 10 }))
    -- a change inside the new folder is seen too
    put(dir, 'deep/er/b.lua', "return { NEWQ = { _type = 'QUEUE', b = function() return 'b2' end } }")
    h.wait_for(function() return q:run('NEWQ', 'b', {}, { wait = 10 }) == 'b2' end, 10, 'the edit in the new folder')
    -- removed again: the queue is no longer served
    rm(dir .. '/deep')
    serving(q, 'RL', p)
    local code, _, err = stop(p)
    assert.equal(0, code, err)
  end)

  it('--procs 2: children replaced one at a time while jobs run; serving never stops, none lost or mixed', function()
    put(dir, 'lib/ver.lua', helper(1))
    put(dir, 'a.lua', jobfile(1))
    local p = start(dir, { '--watch', '--procs', '2', '--concurrency', '4' }, q, 'RL', 2)
    local held = q:enqueueJob('RL', 'work', { hold = true })
    h.wait_for(function() return find(notes(r), function(n) return n.id == held end) end, 10, 'the held job to start')
    local f = feeder(q)
    h.wait_for(function() return #notes(r) > 20 end, 10, 'jobs to run on version 1')
    -- version 2 takes 1.5 s to load (in the supervisor's check and in each new child): a
    -- supervisor that stopped its children before their successors served would stop serving
    -- for that long
    local t_edit = jobrt.now()
    put(dir, 'lib/ver.lua', helper(2))
    put(dir, 'a.lua', jobfile(2, nil, "jobrt.sleep(1.5)"))
    stderr_has(p, 'reloaded job files: 2 worker child(ren) replaced one at a time; serving RL', 'the rolling replacement')
    local t_done = jobrt.now()
    h.wait_for(function() return find(notes(r), function(n) return n.file == 2 end) end, 10, 'a job on version 2')
    r:call('RPUSH', 'reload:go:' .. held, 'go')
    -- a little more stream after the replacement
    local n0 = #f.ids
    h.wait_for(function() return #f.ids > n0 + 20 end, 10, 'more jobs')
    f:finish()
    local ids = f.ids
    ids[#ids + 1] = held
    local by = check_all(q, r, ids)
    -- the held job ran from start to end in an old child, on version 1
    local hn = by['RL:' .. held]
    assert.same({ 1, 1, 1, 1 }, { hn[1].file, hn[1].lib, hn[2].file, hn[2].lib })
    assert.is_true(hn[2].t > t_done)
    -- the last jobs ran on version 2
    assert.equal(2, by['RL:' .. f.ids[#f.ids - 1]][1].file)
    -- jobs kept completing all along: no gap of a second between two ends
    local ends = {}
    for _, n in ipairs(notes(r)) do
      if n.what == 'end' and n.t >= t_edit and n.t <= t_done + 0.5 then ends[#ends + 1] = n.t end
    end
    table.sort(ends)
    assert.is_true(#ends > 20, 'jobs ended during the replacement: ' .. #ends)
    local gap = ends[1] - t_edit
    for i = 2, #ends do gap = math.max(gap, ends[i] - ends[i - 1]) end
    assert.is_true(gap < 1, ('no job ended for %.2f s during the replacement'):format(gap))
    local code, _, err = stop(p)
    assert.equal(0, code, err)
    -- from the children's own logs: two children served at every moment after the first two
    -- started (a new one before its predecessor was told to stop)
    local events = {}
    for line in err:gmatch('[^\n]+') do
      local ts, pid, rest = line:match('^(%S+) jobrt%[(%d+)%] info: (.*)$')
      if ts then
        local hh, mm, ss = ts:match('T(%d+):(%d+):([%d.]+)Z$')
        local t = tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
        if rest:match('^worker %S+ serving RL') then events[#events + 1] = { t, 1, pid } end
        if rest:match('^SIGTERM: stopping gracefully') then events[#events + 1] = { t, -1, pid } end
      end
    end
    table.sort(events, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] > b[2]) end)
    local live, least, starts, shown = 0, math.huge, 0, {}
    for i, e in ipairs(events) do
      live = live + e[2]
      if e[2] > 0 then starts = starts + 1 end
      shown[i] = ('%.3f %s pid %s -> %d serving'):format(e[1], e[2] > 0 and 'serves' or 'stops', e[3], live)
      -- from the second start on, until the final stop (the last two events)
      if starts >= 2 and i < #events - 1 then least = math.min(least, live) end
    end
    shown = table.concat(shown, '\n')
    -- 2 + 2 children served; 2 were replaced, 2 stopped at the end
    assert.equal(8, #events, shown .. '\n' .. err)
    assert.is_true(least >= 2, 'fewer than two children served at some moment:\n' .. shown)
  end)
end)
