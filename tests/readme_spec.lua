-- README.md: every example runs. Each ```sh and ```lua block is run, top to bottom, against a
-- private redis-server (JOBRT_REDIS points at it, HOME is a scratch folder, the working folder is
-- the repository), so copying an example into a shell or a file works as the README says.
--
-- The rules (README "Developing" says the same; follow them when you add a section):
--   * ```sh (also bash, shell) blocks run with `sh -e`: every command must succeed (a failure shows
--     the commands as they ran, `sh -x`, with their output).
--   * ```lua blocks run with `jobrt run`; a block whose first line is `-- jobs/NAME.lua` is a job
--     file instead: it must load as one (with jobs/lib on the path), and when jobs/NAME.lua exists
--     the block must be that file (its leading comment lines aside).
--   * Output and other illustrations go in ```text (or another language that is not run);
--     a block without a language is an error.
--   * <!-- readme: skip REASON --> on the line before a block: not run (say why).
--   * <!-- readme: background --> on the line before a sh block of one command that serves until
--     stopped (a worker): it is started in the background, the test waits until a new worker has
--     registered, and it is stopped with SIGTERM at the end, when it must exit 0.
-- A failure names the block by its line in README.md and shows the block and its output.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'

local README = 'README.md'
local RUN = { sh = 'sh', bash = 'sh', shell = 'sh', lua = 'lua' }

local function read(path)
  local f = assert(io.open(path, 'rb'))
  local t = f:read('*a')
  f:close()
  return t
end

local function write(path, text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The fenced blocks of text: { line =, lang =, body =, marker = {kind=, arg=, line=} | nil },
-- and the problems found while reading (unclosed fences, markers before no block).
local function parse(text)
  local lines = {}
  for l in (text .. '\n'):gmatch('(.-)\r?\n') do lines[#lines + 1] = l end
  local blocks, problems = {}, {}
  local i = 1
  local pending                          -- a marker waiting for its block
  while i <= #lines do
    local l = lines[i]
    local fence, info = l:match('^(```+)%s*(.-)%s*$')
    local marker = l:match('^<!%-%-%s*readme:%s*(.-)%s*%-%->%s*$')
    if pending and not fence then
      problems[#problems + 1] = ('README.md:%d: the marker <!-- readme: %s --> must be on the line right before a ``` block')
        :format(pending.line, pending.text)
      pending = nil
    end
    if marker then
      local kind, arg = marker:match('^(%S+)%s*(.*)$')
      pending = { kind = kind, arg = arg, line = i, text = marker }
      i = i + 1
    elseif fence then
      local start, body = i, {}
      i = i + 1
      while i <= #lines and not lines[i]:match('^' .. fence .. '%s*$') do
        body[#body + 1] = lines[i]
        i = i + 1
      end
      if i > #lines then
        problems[#problems + 1] = ('README.md:%d: this ``` block is never closed'):format(start)
      end
      blocks[#blocks + 1] = { line = start, lang = info:match('^(%S*)'), body = table.concat(body, '\n') .. '\n',
                              marker = pending }
      pending = nil
      i = i + 1
    else
      i = i + 1
    end
  end
  return blocks, problems
end

-- What the test does with a block: 'sh', 'lua', 'jobfile', 'background', 'skip', 'other', or
-- nil, message when the block breaks the rules.
local function kind_of(b)
  local m = b.marker
  if b.lang == '' then
    return nil, ('README.md:%d: a ``` block without a language: write ```sh or ```lua for code that runs, ```text for output and illustrations'):format(b.line)
  end
  if m then
    if m.kind == 'skip' then
      if m.arg == '' then
        return nil, ('README.md:%d: <!-- readme: skip --> needs a reason: <!-- readme: skip why it cannot run -->'):format(m.line)
      end
      return 'skip'
    elseif m.kind == 'background' then
      if RUN[b.lang] ~= 'sh' then
        return nil, ('README.md:%d: <!-- readme: background --> goes before a ```sh block'):format(m.line)
      end
      local cmds = 0
      for l in b.body:gmatch('[^\n]+') do
        if not l:match('^%s*#') and l:find('%S') then cmds = cmds + 1 end
      end
      if cmds ~= 1 then
        return nil, ('README.md:%d: a background block holds one command (it is stopped with SIGTERM), found %d'):format(b.line, cmds)
      end
      return 'background'
    end
    return nil, ('README.md:%d: unknown marker <!-- readme: %s -->: use skip REASON or background'):format(m.line, m.text)
  end
  local run = RUN[b.lang]
  if run == 'lua' and b.body:match('^%-%-%s*jobs/[%w_/%-]+%.lua%s*\n') then return 'jobfile' end
  return run or 'other'
end

local function failure(b, what, out)
  return ('README.md:%d: this %s block %s\n%s--- output ---\n%s'):format(b.line, b.lang, what, b.body, out or '')
end

describe('README.md', function()
  local text = read(README)
  local blocks, problems = parse(text)
  local server, home, env
  local background = {}

  -- each block runs in a process group of its own, so whatever it starts can be stopped with it
  local function spawn(file, args)
    local p = assert(proc.spawn{ file = file, args = args, env = h.environ(env), cwd = h.root,
                                 stdin = '', capture = true, detached = true })
    h.spawned[p] = table.concat(args, ' ')
    return p
  end

  local function kill_group(p, sig)
    proc.kill(-p:pid(), sig)     -- sig: a number (9 SIGKILL)
  end

  -- runs to the end (60 s at most, then the block's whole process group is killed): exit code,
  -- output (stdout then stderr)
  local function finish(p)
    local guard = jobrt.timer()
    guard:start(60, function() kill_group(p, 9) end)
    local code, sig = p:wait()
    guard:close()
    local out, err = p:output()
    return code, out .. err, sig
  end

  setup(function()
    server = h.start_redis()
    home = h.tmpdir()
    env = { JOBRT_REDIS = server.url, HOME = home, JOBRT_LOG_FORMAT = false }
  end)
  teardown(function()
    for _, bg in ipairs(background) do kill_group(bg.p, 9) end
    server:stop()
    os.execute('rm -rf ' .. q(home))
  end)

  -- the workers alive in the registry (their entries have not expired)
  local function live_workers()
    local q = jobrt.connect(server.url)
    local n = #q:workers()
    q:close()
    return n
  end

  it('follows the rules for blocks and markers', function()
    local all = {}
    for _, p in ipairs(problems) do all[#all + 1] = p end
    for _, b in ipairs(blocks) do
      local k, err = kind_of(b)
      if not k then all[#all + 1] = err end
    end
    assert(#all == 0, table.concat(all, '\n'))
    assert.truthy(#blocks > 5)
  end)

  it('starts from an empty Redis', function()
    local r = h.redis(server.url)
    assert.equal('OK', r:call('FLUSHALL'))
    r:close()
  end)

  for _, b in ipairs(blocks) do
    local k = kind_of(b)
    if k == 'sh' then
      it(('README.md:%d: the sh block runs'):format(b.line), function()
        local file = home .. '/block-' .. b.line .. '.sh'
        write(file, b.body)
        -- -x: the output shows each command before its own output, so the failing one is plain
        local code, out, sig = finish(spawn('/bin/sh', { '/bin/sh', '-c', 'exec 2>&1; exec /bin/sh -ex "$0"', file }))
        assert(code == 0 and not sig, failure(b, ('failed (exit %s%s)'):format(tostring(code), sig and (', signal ' .. sig) or ''), out))
      end)
    elseif k == 'lua' then
      it(('README.md:%d: the lua block runs'):format(b.line), function()
        local file = home .. '/block-' .. b.line .. '.lua'
        write(file, b.body)
        local code, out = finish(spawn(h.jobrt_bin, { h.jobrt_bin, 'run', file }))
        assert(code == 0, failure(b, ('failed (exit %s)'):format(tostring(code)), out))
      end)
    elseif k == 'jobfile' then
      it(('README.md:%d: the job file loads'):format(b.line), function()
        local name = b.body:match('^%-%-%s*(jobs/[%w_/%-]+%.lua)')
        local dir = home .. '/jobfile-' .. b.line
        local path = dir .. '/' .. name
        assert(os.execute('mkdir -p ' .. q(path:match('^(.*)/')) .. ' && ln -sfn ' .. q(h.root .. '/jobs/lib') .. ' ' ..
          q(dir .. '/jobs/lib')) == 0)
        write(path, b.body)
        local code, out = finish(spawn(h.jobrt_bin, { h.jobrt_bin, '-e', [[
          local desc, err = require('jobrt.jobfiles').load({ arg[1] })
          if not desc then io.stderr:write(err, '\n') return 1 end
          return 0
        ]], path }))
        assert(code == 0, failure(b, 'does not load as a job file', out))
        -- the repository's file of that name is the same code
        local f = io.open(h.root .. '/' .. name, 'rb')
        if f then
          local function strip(s)
            while s:match('^%-%-[^\n]*\n') or s:match('^%s*\n') do s = s:gsub('^[^\n]*\n', '', 1) end
            return s
          end
          local repo = f:read('*a')
          f:close()
          assert(strip(repo) == strip(b.body), failure(b, ('differs from %s (past their leading comments)'):format(name),
            strip(repo)))
        end
      end)
    elseif k == 'background' then
      it(('README.md:%d: the background block starts a worker'):format(b.line), function()
        local before = live_workers()
        local file = home .. '/block-' .. b.line .. '.sh'
        local cmd = {}
        for l in b.body:gmatch('[^\n]+') do
          if not l:match('^%s*#') and l:find('%S') then cmd[#cmd + 1] = 'exec ' .. l end
        end
        write(file, table.concat(cmd, '\n') .. '\n')
        local p = spawn('/bin/sh', { '/bin/sh', file })
        background[#background + 1] = { p = p, b = b }
        local ok = pcall(h.wait_for, function() return p:exited() or live_workers() > before end, 15, 'the worker')
        assert(ok and not p:exited(), failure(b, 'did not start a worker', select(2, p:output())))
      end)
    end
  end

  it('stops the background workers with SIGTERM: they exit 0', function()
    for _, bg in ipairs(background) do
      bg.p:kill('SIGTERM')
      local code, out = finish(bg.p)
      assert(code == 0, failure(bg.b, ('exited %s on SIGTERM'):format(tostring(code)), out))
    end
  end)
end)

-- the parser and the rules, on small documents
describe('README.md checker', function()
  local function kinds(doc)
    local blocks, problems = parse(doc)
    local out = {}
    for _, b in ipairs(blocks) do
      local k, err = kind_of(b)
      out[#out + 1] = k or err
    end
    for _, p in ipairs(problems) do out[#out + 1] = p end
    return out
  end

  it('runs sh and lua, skips marked and other blocks, and fails unmarked ones without a language', function()
    assert.same({ 'sh', 'lua', 'jobfile', 'other', 'skip', 'background',
      'README.md:22: a ``` block without a language: write ```sh or ```lua for code that runs, ```text for output and illustrations' },
      kinds(table.concat({
        '```sh', 'echo hi', '```',
        '```lua', 'print(1)', '```',
        '```lua', '-- jobs/x.lua', 'return {}', '```',
        '```text', 'output', '```',
        '<!-- readme: skip it starts a server -->', '```sh', 'make run', '```',
        '<!-- readme: background -->', '```sh', './jobrt jobs/   # serve', '```',
        '```', 'what?', '```' }, '\n')))
  end)

  it('names misplaced markers, markers without a reason, unknown markers and unclosed blocks', function()
    assert.same({
      'README.md:1: <!-- readme: skip --> needs a reason: <!-- readme: skip why it cannot run -->',
      'README.md:5: unknown marker <!-- readme: later -->: use skip REASON or background',
      'README.md:10: a background block holds one command (it is stopped with SIGTERM), found 2',
      'sh',
      'README.md:14: the marker <!-- readme: skip x --> must be on the line right before a ``` block',
      'README.md:16: this ``` block is never closed',
    }, kinds(table.concat({
      '<!-- readme: skip -->', '```sh', 'x', '```',
      '<!-- readme: later -->', '```sh', 'x', '```',
      '<!-- readme: background -->', '```sh', 'a', 'b', '```',
      '<!-- readme: skip x -->', '', '```sh', 'never closed' }, '\n')))
  end)
end)
