-- `make install` (PREFIX, DESTDIR): the binary, the man page jobrt(1) built from the --help
-- texts, bash completion, and the example systemd unit (contrib/jobrt.service).
local h = require 'tests.helpers'
local cli = require 'jobrt.cli'

-- runs a shell command: its output (stdout and stderr) and exit status
local function sh(cmd)
  local f = assert(io.popen('(' .. cmd .. ') 2>&1; echo "exit=$?"'))
  local out = f:read('*a')
  f:close()
  local body, code = out:match('^(.-)exit=(%d+)\n$')
  return body, tonumber(code)
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- a make of its own: nothing of the suite's make (jobserver, level) leaks in
local MAKE = 'cd ' .. q(h.root) .. ' && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s'

local function norm(s) return (s:gsub('%s+', ' '):gsub('^ ', ''):gsub(' $', '')) end

describe('make install', function()
  local dest, prefix = nil, '/usr'
  setup(function()
    dest = h.tmpdir()
    local out, code = sh(MAKE .. ' install DESTDIR=' .. q(dest) .. ' PREFIX=' .. prefix)
    assert(code == 0, 'make install failed:\n' .. out)
  end)
  teardown(function() os.execute('rm -rf ' .. q(dest)) end)

  local function path(p) return dest .. prefix .. p end

  it('installs the binary, which runs from anywhere (the stdlib is inside it)', function()
    local out = sh('cd / && ' .. q(path('/bin/jobrt')) .. ' --version')
    assert.matches('^jobrt %d+%.%d+%.%d+ %(LuaJIT ', out)
    local mode = sh('stat -c %a ' .. q(path('/bin/jobrt')))
    assert.equal('755\n', mode)
  end)

  it('installs jobrt(1), which carries every command\'s --help text', function()
    local man = path('/share/man/man1/jobrt.1')
    local rendered = sh('MANWIDTH=300 man -l ' .. q(man) .. ' | col -bx')
    assert.matches('JOBRT%(1%)', rendered)
    local text = norm(rendered)
    local cmds = cli.commands()
    assert.truthy(#cmds >= 10)
    local checked = 0
    for _, c in ipairs(cmds) do
      local help = sh(q(h.jobrt_bin) .. ' ' .. c .. ' --help')
      assert.matches('usage:', help)
      for line in help:gmatch('[^\n]+') do
        if line:find('%S') then
          assert.truthy(text:find(norm(line), 1, true), ("jobrt %s --help line missing from the man page: %s"):format(c, line))
          checked = checked + 1
        end
      end
    end
    assert.truthy(checked > 100)
    -- an option copies as an ASCII hyphen-minus, not a typographic hyphen
    assert.truthy(rendered:find('--concurrency N', 1, true))
  end)

  it('installs bash completion for commands, options and their values', function()
    local file = path('/share/bash-completion/completions/jobrt')
    local function complete(...)
      local words = {}
      for _, w in ipairs({ ... }) do words[#words + 1] = q(w) end
      local out = sh('bash -c ' .. q('source ' .. q(file) .. '; COMP_WORDS=(' .. table.concat(words, ' ') ..
        '); COMP_CWORD=' .. (#words - 1) .. '; _jobrt; echo "${COMPREPLY[*]}"'))
      return (out:gsub('\n$', ''))
    end
    assert.equal('enqueue', complete('jobrt', 'enq'))
    assert.equal('--wait --wait-timeout', complete('jobrt', 'enqueue', 'Q', 'j', '--hash', 'h', '--wa'))
    assert.equal('QUEUE LBQUEUE DELQUEUE', complete('jobrt', '--redis', 'redis://x', 'queue-type', 'Q', ''))
    assert.equal('list retry delete', complete('jobrt', 'failed', 'MAIL', ''))
    assert.equal('text json', complete('jobrt', 'health', '--log-format', ''))
    assert.equal('', complete('jobrt', 'work', 'jobs/', '--concurrency', ''))
    assert.equal('--help --log-format --log-level --redis --timeout', complete('jobrt', 'health', '--'))
  end)

  it('installs the example systemd unit: stop timeout above --grace, restart on failure', function()
    local f = assert(io.open(path('/share/doc/jobrt/examples/jobrt.service')))
    local unit = f:read('*a')
    f:close()
    local function key(k) return unit:match('\n' .. k .. '=([^\n]*)') end
    local exec = assert(key('ExecStart'))
    local grace = tonumber(exec:match('%-%-grace[ =](%d+)'))
    assert.truthy(grace, 'ExecStart gives --grace')
    -- the supervisor gives its children grace + 5 s before it kills them
    assert.is_true(tonumber(key('TimeoutStopSec')) > grace + 5, 'TimeoutStopSec must be above --grace + 5')
    assert.equal('on-failure', key('Restart'))
    assert.equal('mixed', key('KillMode'))       -- one SIGTERM, to the supervisor only
    assert.equal('/bin/kill -HUP $MAINPID', key('ExecReload'))   -- systemctl reload: a rolling reload
    assert.equal('/usr/local/bin/jobrt', exec:match('^(%S+)'))
    -- its command line is one jobrt accepts: only the job folder is missing here (exit 1, not 2)
    local args = exec:gsub('^%S+', '')
    local out, code = sh(q(h.jobrt_bin) .. args .. ' --redis redis://127.0.0.1:1')
    assert.equal(1, code, out)
    assert.matches('cannot read /srv/jobrt/jobs', out, 1, true)
  end)

  it('make uninstall removes what it installed', function()
    local out, code = sh(MAKE .. ' uninstall DESTDIR=' .. q(dest) .. ' PREFIX=' .. prefix)
    assert.equal(0, code, out)
    assert.equal('', sh('find ' .. q(dest) .. ' -type f'))
  end)
end)
