-- Tab completion in `jobrt repl` (readline's completion in runtime/term.c, candidates from
-- jobrt.repl.complete): globals, table fields, methods of `queue`, and queue names from
-- RESERVED:QCONFIG. Unit cases for the candidates, then keystrokes through a pseudo-terminal.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local pty = require 'tests.05-client.pty'
local repl = require 'jobrt.repl'

-- readline's word start for a line typed up to its end, with the REPL's word breaks
local function complete(line, env, queues)
  local start = #line
  while start > 0 and not line:sub(start, start):find('[ \t\n"\'`=+%-*/%%^~#<>;,(){}%[%]|&]') do start = start - 1 end
  return repl.complete(line, start, #line, env, queues)
end

describe('jobrt.repl.complete', function()
  local obj = setmetatable({}, { __index = { enqueueJob = print, run = print, stats = print, field = 1 } })
  local env = setmetatable({ queue = obj, jobrt = jobrt, pretty = {}, mytable = { alpha = 1, beta = { gamma = 2 } } },
                           { __index = _G })
  local queues = { 'ECHO', 'INDEX', 'MAIL', 'MAILBOX' }

  local cases = {
    { 'globals and keywords', 'pr', { 'pretty', 'print' } },
    { 'a keyword', 'whi', { 'while' } },
    { 'a table field', 'jobrt.sle', { 'jobrt.sleep' } },
    { 'nested fields', 'mytable.beta.g', { 'mytable.beta.gamma' } },
    { 'every field after a dot', 'mytable.', { 'mytable.alpha', 'mytable.beta' } },
    { 'methods of an object (functions only)', 'queue:', { 'queue:enqueueJob', 'queue:run', 'queue:stats' } },
    { 'a method by its start', 'x = queue:en', { 'queue:enqueueJob' } },
    { 'string methods', 's = name:up', {} },                     -- name is not defined: nothing
    { 'string library', 'string.fo', { 'string.format' } },
    { 'queue names in a method call', 'queue:run("MA', { 'MAIL', 'MAILBOX' } },
    { 'queue names with single quotes', "queue:stats('", queues },
    { 'hidden names only once _ is typed', '_V', { '_VERSION' } },
    { 'nothing for an unknown table', 'nosuch.x', {} },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      assert.same(c[3], complete(c[2], env, queues))
    end)
  end

  it('never calls anything to find fields', function()
    local called = false
    local trap = setmetatable({}, { __index = function() called = true end })
    local e = setmetatable({ trap = trap }, { __index = _G })
    assert.same({}, complete('trap.x', e, {}))
    assert.is_false(called)
  end)
end)

describe('jobrt repl on a terminal: Tab', function()
  local home, t, q
  before_each(function()
    if not pty.available() then pending('script(1) is not installed: no pseudo-terminal') end
    h.flush()
    q = jobrt.connect(h.url)
    q:queueType('completeme', 'QUEUE')
    home = h.tmpdir()
    t = pty.spawn({ 'repl' }, { env = { HOME = home } })
    t:expect('`queue` is connected to 127.0.0.1:')
    t:expect('jobrt> ')
  end)
  after_each(function()
    if t then t:kill() end
    t = nil
    q:close()
    os.execute("rm -rf '" .. home .. "'")
  end)

  it('completes a table field: jobrt.sle<Tab> is jobrt.sleep', function()
    t:send('=type(jobrt.sle\t)\n')
    t:expect('\nfunction\n')
    assert.equal(0, t:close())
  end)

  it('completes a method of queue and a global', function()
    t:send('=queue:queueTy\t("completeme")\n')
    t:expect('\nQUEUE\n')
    t:send('=type(pret\t)\n')
    t:expect('\ntable\n')
    assert.equal(0, t:close())
  end)

  it('completes queue names from RESERVED:QCONFIG inside a call, closing the quote', function()
    t:send('=queue:queueType("complet\t)\n')
    t:expect('\nQUEUE\n')
    assert.equal(0, t:close())
  end)

  it('a queue made after the REPL started is offered after the next entry', function()
    q:queueType('latecomer', 'LBQUEUE')
    t:send('=1\n')
    t:expect('\n1\n')
    t:send("=queue:queueType('latec\t)\n")
    t:expect('\nLBQUEUE\n')
    assert.equal(0, t:close())
  end)

  it('completes the common part, and lists the candidates on a second Tab', function()
    t:send('queue:enqueueJ\t')
    t:expect('ob')
    t:send('\t\t')
    t:expect('queue:enqueueJobs')
    t:expect('jobrt> queue:enqueueJob')     -- the line is shown again under the list
    t:send('\3')
    t:expect('jobrt> ')
    t:send('=2\n')
    t:expect('\n2\n')
    assert.equal(0, t:close())
  end)
end)
