-- `jobrt repl`: piped stdin (statement by statement) and a real terminal session through a
-- pseudo-terminal (tests/05-client/pty.lua, script(1)). Jobs typed at the prompt are served by a
-- worker running in this process (q:registerWorker).
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local pty = require 'tests.05-client.pty'
local repl = require 'jobrt.repl'
local pretty = require 'jobrt.pretty'

local Q = 'rq'

setup(function() jobrt.set_log_level('warn') end)
teardown(function() jobrt.set_log_level('info') end)

describe('jobrt.pretty', function()
  it('prints nested tables with sorted keys, cycles and a depth limit', function()
    local t = { 1, 'two', a = { b = { c = { d = { e = 1 } } } }, ['key with space'] = true }
    t.self = t
    assert.equal('{ 1, "two", a = { b = { c = { d = {...} } } }, ["key with space"] = true, self = <cycle> }',
      pretty.format(t, { width = 100 }))
    assert.equal('{\n  1,\n  "two",\n  a = { b = { c = { d = {...} } } },\n  ["key with space"] = true,\n  self = <cycle>\n}',
      pretty.format(t))
    assert.equal('null', pretty.format(require('cjson').null))
    assert.equal('"a\\nb"', pretty.format('a\nb'))
    assert.equal('{}', pretty.format({}))
  end)

  it('breaks long tables over lines and limits the entries', function()
    local t = {}
    for i = 1, 30 do t['key' .. i] = ('v'):rep(5) end
    local s = pretty.format(t, { items = 3, width = 40 })
    assert.equal('{\n  key1 = "vvvvv",\n  key10 = "vvvvv",\n  key11 = "vvvvv",\n  ... (27 more)\n}', s)
  end)
end)

describe('jobrt.repl compile', function()
  it('tells expressions, statements, incomplete chunks and errors apart', function()
    assert.is_function(repl.compile('1 + 1'))
    assert.is_function(repl.compile('=1'))
    assert.is_function(repl.compile('x = 1'))
    local fn, err, incomplete = repl.compile('for i = 1, 2 do')
    assert.is_nil(fn)
    assert.is_true(incomplete)
    -- an expression cut short is a bad statement but an incomplete expression: it continues
    for _, text in ipairs({ '1+', 'queue:stats(', '=1 ..', 'x = 1 +' }) do
      fn, err, incomplete = repl.compile(text)
      assert.is_nil(fn, text)
      assert.is_true(incomplete, text .. ': ' .. tostring(err))
    end
    assert.is_function(repl.compile('1+\n2'))
    fn, err, incomplete = repl.compile('x = = 1')
    assert.is_nil(fn)
    assert.is_nil(incomplete)
    assert.equal("stdin:1: unexpected symbol near '='", err)
  end)
end)

describe('jobrt repl', function()
  local q
  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType(Q, 'QUEUE')
  end)
  after_each(function() q:close() end)

  describe('with piped stdin', function()
    it('runs a multi-line script statement by statement', function()
      local code, out, err = h.run_jobrt({ 'repl' }, { stdin = table.concat({
        'local n = 0',      -- a local lives for its own entry, as in the luajit prompt
        'total = 0',
        'for i = 1, 3 do',
        '  total = total + i',
        'end',
        'for i = 1, 3 do total = total + i end',
        '=total',
        'id = queue:enqueueJob("rq", "send", { to = "ann" })',
        'print("id", id)',
        '=queue:getJob("rq", id)["function"]',
        '{ a = 1, list = { 1, 2 } }',
        'function f(x)',
        '  return x * 2',
        'end',
        'f(21)',
      }, '\n') .. '\n' })
      assert.equal('', err)
      assert.equal(0, code)
      assert.equal('12\nid\t1\nsend\n{ a = 1, list = { 1, 2 } }\n42\n', out)
    end)

    it('reports errors on stderr, goes on, and exits 1', function()
      local code, out, err = h.run_jobrt({ 'repl' }, { stdin = 'x = = 1\nerror("boom")\n=1 + 1\nqueue:enqueueJob("nope", "f", {})\n=2\nqueue:enqueueJob("NOPE!", "f", {})\n1+\n2\n' })
      assert.equal(1, code)
      assert.equal('2\n2\n3\n', out)
      assert.matches("^stdin:1: unexpected symbol near '='\nstdin:1: boom\nstack traceback:\n", err)
      -- what the client raises itself is one line, without a traceback through its insides
      assert.matches("\nenqueueJob: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE\n" ..
        "enqueueJob: the queue name may use only A-Z a-z 0-9 _ . : - (got 'NOPE!', with '!' at byte 5)\n", err, 1, true)
      assert.equal("with '!' at byte 5)\n", err:sub(-20))
      assert.falsy(err:find('client.lua', 1, true), err)
    end)

    it('names a statement left incomplete at the end of input, and exits 1', function()
      local code, out, err = h.run_jobrt({ 'repl' }, { stdin = '=1\nfor i = 1, 2 do\n  print(i)\n' })
      assert.equal(1, code)
      assert.equal('1\n', out)
      assert.equal("stdin:2: 'end' expected (to close 'for' at line 1) near '<eof>' (the input ended before the statement was complete)\n", err)
    end)

    it('waits for callbacks still running at the end of input', function()
      local code, out = h.run_jobrt({ 'repl' }, { stdin =
        'queue:enqueueJob("rq", "f", {}, nil, function(err, id) jobrt.sleep(0.05) print("cb", err, id) end)\n' })
      assert.equal(0, code)
      assert.equal('cb\tnil\t1\n', out)
    end)

    -- (no stdin given: these exit before reading it, and writing to a pipe nobody reads would
    -- raise SIGPIPE in this process)
    it('names an unreachable Redis, a bad argument and a bad option', function()
      local code, out, err = h.run_jobrt({ 'repl', '--redis', 'redis://127.0.0.1:1' })
      assert.equal(1, code)
      assert.equal('', out)
      assert.equal('jobrt repl: cannot connect to redis at 127.0.0.1:1: Connection refused: start redis-server there, or pass --redis URL (or set JOBRT_REDIS)\n', err)
      code, _, err = h.run_jobrt({ 'repl', 'extra' })
      assert.equal(2, code)
      assert.equal("jobrt repl: unexpected argument 'extra' (see jobrt repl --help)\n", err)
      code, _, err = h.run_jobrt({ 'repl', '--nope' })
      assert.equal(2, code)
      assert.equal('jobrt repl: unknown option --nope (see jobrt repl --help)\n', err)
    end)
  end)

  describe('on a terminal', function()
    local home, t
    before_each(function()
      if not pty.available() then pending('script(1) is not installed: no pseudo-terminal') end
      home = h.tmpdir()
    end)
    after_each(function()
      if t then t:kill() end
      t = nil
      os.execute("rm -rf '" .. home .. "'")
    end)

    local function start()
      t = pty.spawn({ 'repl' }, { env = { HOME = home } })
      t:expect('`queue` is connected to 127.0.0.1:')
      t:expect('jobrt> ')
      return t
    end

    it('enqueues and shows the id; a callback prints while the prompt waits', function()
      start()
      t:send('queue:enqueueJob("rq", "send", { to = "ann" })\n')
      t:expect('\n1\n')
      t:expect('jobrt> ')
      t:send('queue:enqueueJob("rq", "send", {}, nil, function(err, id) print("callback got", err, id) end)\n')
      t:expect('callback got\tnil\t2')
      t:send('=queue:stats("rq").pending\n')
      t:expect('\n2\n')
      assert.equal(0, t:close())
    end)

    it('q:run against a live worker prints the result', function()
      local w = assert(q:registerWorker(h.url, { [Q] = {
        add = function(args) return { sum = args.a + args.b } end,
      } }, { log_jobs = false }))
      start()
      t:send('queue:run("rq", "add", { a = 2, b = 40 })\n')
      t:expect('{ sum = 42 }')
      t:expect('jobrt> ')
      assert.equal(0, t:close())
      w:stop(1)
    end)

    it('a syntax error and a runtime error each leave the prompt working', function()
      start()
      t:send('x = = 1\n')
      t:expect("stdin:1: unexpected symbol near '='")
      t:expect('jobrt> ')
      t:send('local t = nil; return t.field\n')
      t:expect("stdin:1: attempt to index local 't' (a nil value)")
      t:expect('stack traceback:')
      t:expect('jobrt> ')
      t:send('=6 * 7\n')
      t:expect('\n42\n')
      assert.equal(0, t:close())
    end)

    it('continues incomplete chunks, and Ctrl-C clears the line', function()
      start()
      t:send('for i = 1, 2 do\n')
      t:expect('>> ')
      t:send('print("line", i) end\n')
      t:expect('line\t1\nline\t2\n')
      t:expect('jobrt> ')
      t:send('garbage garbage')
      t:expect('garbage garbage')
      t:send('\3')
      t:expect('jobrt> ')
      t:send('=1 + 2\n')
      t:expect('\n3\n')
      t:send('if true then\n')
      t:expect('>> ')
      t:send('\3')
      t:expect('jobrt> ')
      t:send('=4\n')
      t:expect('\n4\n')
      assert.equal(0, t:close())
    end)

    it('Ctrl-C interrupts an entry that waits', function()
      start()
      t:send('jobrt.sleep(30)\n')
      -- readline echoes the Enter once it has the line; the entry starts in that same turn
      t:expect('jobrt.sleep(30)\n')
      t:send('\3')
      t:expect('interrupted')
      t:expect('jobrt> ')
      t:send('=5\n')
      t:expect('\n5\n')
      assert.equal(0, t:close())
    end)

    it('Ctrl-C interrupts an entry that never yields', function()
      start()
      t:send('local n = 0 while true do n = n + 1 end\n')
      t:expect('while true do n = n + 1 end\n')
      t:send('\3')
      t:expect('interrupted')
      t:expect('jobrt> ')
      t:send('=6\n')
      t:expect('\n6\n')
      assert.equal(0, t:close())
    end)

    it('prints async output above the line being typed', function()
      start()
      t:send('jobrt.spawn(function() jobrt.sleep(0.3) print("tick") end)\n')
      t:expect('jobrt> ')
      t:send('partial')
      t:expect('tick\n')
      t:expect('partial')
      t:send(' = 5\n')
      t:send('=partial\n')
      t:expect('\n5\n')
      assert.equal(0, t:close())
    end)

    it('keeps history in ~/.jobrt_history across sessions', function()
      start()
      t:send('=40 + 2\n')
      t:expect('\n42\n')
      assert.equal(0, t:close())
      local f = assert(io.open(home .. '/.jobrt_history'))
      local text = f:read('*a')
      f:close()
      assert.matches('=40 + 2\n', text, 1, true)
      start()
      t:send('\16')              -- Ctrl-P: the previous line
      t:expect('=40 + 2')
      t:send('\n')
      t:expect('\n42\n')
      assert.equal(0, t:close())
    end)

    it('Ctrl-C on a recalled line leaves that history entry as it was', function()
      start()
      t:send('=20 + 2\n')
      t:expect('\n22\n')
      t:send('\16')              -- Ctrl-P recalls it; Ctrl-C drops it; then a new line
      t:expect('=20 + 2')
      t:send('\3')
      t:expect('jobrt> ')
      t:send('=30 + 3\n')
      t:expect('\n33\n')
      t:send('\16\16\n')        -- two lines back: the recalled one, unchanged
      t:expect('\n22\n')
      assert.equal(0, t:close())
      local f = assert(io.open(home .. '/.jobrt_history'))
      local lines = {}
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
      assert.same({ '=20 + 2', '=30 + 3', '=20 + 2' }, { unpack(lines, #lines - 2) })
    end)

  end)
end)
