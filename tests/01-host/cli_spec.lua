-- The host's own modes: -e, run, --help, --version, exit codes, tracebacks,
-- and no libuv handle left open at exit.
local h = require 'tests.helpers'

describe("jobrt --version", function()
  it("names jobrt, LuaJIT, libuv and hiredis", function()
    local code, out = h.run_jobrt({ "--version" })
    assert.equal(0, code)
    assert.matches("^jobrt %d+%.%d+%.%d+ %(LuaJIT 2%.1[^,]*, libuv 1%.%d+%.%d+, hiredis 0%.14%.%d+%)\n$", out)
  end)
end)

describe("jobrt --help", function()
  it("lists the commands", function()
    local code, out = h.run_jobrt({ "--help" })
    assert.equal(0, code)
    for _, c in ipairs({ "enqueue", "queue-type", "stats", "failed", "repl", "run FILE.lua", "-e 'CODE'" }) do
      assert.matches(c, out, 1, true)
    end
  end)

  it("an unknown command exits 2 with a pointer to --help", function()
    local code, _, err = h.run_jobrt({ "frobnicate" })
    assert.equal(2, code)
    assert.equal("jobrt: unknown command 'frobnicate' (see jobrt --help)\n", err)
  end)
end)

describe("jobrt -e", function()
  it("runs the chunk with its arguments in arg and exits 0", function()
    local code, out = h.run_jobrt({ "-e", "print(#arg, arg[1], arg[2])", "a", "b" })
    assert.equal(0, code)
    assert.equal("2\ta\tb\n", out)
  end)

  it("exits non-zero with the error and a traceback when the chunk raises", function()
    local code, _, err = h.run_jobrt({ "-e", "local function f() error('kaput') end f()" })
    assert.equal(1, code)
    assert.matches("^%d+%-%d+%-%d+T[%d:.]+Z jobrt%[%d+%] error: %(command line%):1: kaput\nstack traceback:", err)
    assert.matches("in function 'f'", err, 1, true)
  end)

  it("run: an unknown option is a usage error (exit 2)", function()
    local code, out, err = h.run_jobrt({ "run", "--bogus", "x.lua" })
    assert.equal(2, code)
    assert.equal("", out)
    assert.equal("jobrt run: unknown option --bogus (see jobrt run --help)\n", err)
  end)

  it("reports a syntax error", function()
    local code, _, err = h.run_jobrt({ "-e", "x = = 1" })
    assert.equal(1, code)
    assert.matches("jobrt -e: (command line):1:", err, 1, true)
  end)

  it("waits for everything the chunk spawned", function()
    local code, out = h.run_jobrt({ "-e", [[
      local j = require 'jobrt'
      j.spawn(function() j.sleep(0.05) print('late child') end)
      print('main done')]] })
    assert.equal(0, code)
    assert.equal("main done\nlate child\n", out)
  end)

  it("returns the chunk's number as the exit status", function()
    local code = h.run_jobrt({ "-e", "return 7" })
    assert.equal(7, code)
  end)
end)

describe("common options before the command", function()
  it("--redis before a command, and before the script of run and -e, sets JOBRT_REDIS", function()
    local code, out = h.run_jobrt({ "-e", "--redis", "redis://127.0.0.1:1234/2", "print(os.getenv('JOBRT_REDIS'), arg[1])", "x" })
    assert.equal(0, code)
    assert.equal("redis://127.0.0.1:1234/2\tx\n", out)
    code, out = h.run_jobrt({ "--redis=" .. h.url, "queue-type", "NOSUCHQUEUE" })
    assert.equal(1, code)
  end)

  it("a malformed --redis is a usage error naming the URL", function()
    local code, _, err = h.run_jobrt({ "--redis", "bogus", "stats" })
    assert.equal(2, code)
    assert.matches("^jobrt: %-%-redis: bad redis URL 'bogus': unknown scheme", err)
  end)

  it("-e --help and run --help print the usage", function()
    for _, a in ipairs({ { "-e", "--help" }, { "run", "--help" } }) do
      local code, out = h.run_jobrt(a)
      assert.equal(0, code)
      assert.matches("usage: jobrt run [--redis URL] [--log-level L] [--log-format F] FILE.lua [ARGS]", out, 1, true)
    end
  end)

  it("refuses an option with a value given twice (before or after the command), never showing a password", function()
    local code, out, err = h.run_jobrt({ "--redis", "redis://:pw1@127.0.0.1:1", "--redis", "redis://127.0.0.1:2", "stats" })
    assert.same({ 2, '', "jobrt: --redis is given twice (redis://:***@127.0.0.1:1 and redis://127.0.0.1:2): give it once\n" }, { code, out, err })
    code, out, err = h.run_jobrt({ "stats", "--redis", "redis://:pw1@127.0.0.1:1", "--redis", "redis://127.0.0.1:2" })
    assert.same({ 2, '', "jobrt stats: --redis is given twice (redis://:***@127.0.0.1:1 and redis://127.0.0.1:2): give it once\n" }, { code, out, err })
  end)

  it("run with no file, and -e with no code, print one usage line and a hint (exit 2)", function()
    local code, out, err = h.run_jobrt({ "run" })
    assert.same({ 2, '', "jobrt run: missing FILE.lua: usage: jobrt run FILE.lua [ARGS] (see jobrt run --help)\n" }, { code, out, err })
    code, out, err = h.run_jobrt({ "-e" })
    assert.same({ 2, '', "jobrt -e: missing CODE: usage: jobrt -e 'CODE' [ARGS] (see jobrt run --help)\n" }, { code, out, err })
  end)

  it("reads nothing from a stdin that is /dev/null without trouble", function()
    local proc = require 'jobrt.core.proc'
    local p = assert(proc.spawn{ file = "sh", capture = true, env = h.environ(),
      args = { "sh", "-c", "'" .. h.jobrt_bin .. "' enqueue Q j - --redis " .. h.url .. " </dev/null" } })
    local code = p:wait()
    local out = p:output()
    assert.equal(0, code)
    assert.equal("enqueued 0 jobs\n", out)
  end)
end)

describe("jobrt run", function()
  it("runs a file with its arguments and finds the embedded stdlib from any directory", function()
    local dir = h.tmpdir()
    local f = assert(io.open(dir .. "/s.lua", "w"))
    f:write("local j = require 'jobrt'; local cjson = require 'cjson'\n",
            "print(arg[0]:match('s.lua$'), arg[1], cjson.encode({ n = tonumber(arg[2]) }), type(j.spawn))\n")
    f:close()
    local code, out = h.run_jobrt({ dir .. "/s.lua", "x", "5" }, { cwd = "/" })
    -- `jobrt FILE.lua` serves jobs; scripts go through `jobrt run`.
    code, out = h.run_jobrt({ "run", dir .. "/s.lua", "x", "5" }, { cwd = "/" })
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(0, code)
    assert.equal('s.lua\tx\t{"n":5}\tfunction\n', out)
  end)

  it("names a missing file", function()
    local code, _, err = h.run_jobrt({ "run", "/nonexistent/x.lua" })
    assert.equal(1, code)
    assert.matches("jobrt run: cannot open /nonexistent/x.lua", err, 1, true)
  end)
end)

describe("at exit", function()
  it("no libuv handle is left open after timers, signals, processes and Redis", function()
    local code, out, err = h.run_jobrt({ "-e", [[
      local j = require 'jobrt'
      local redis = require 'jobrt.redis'
      local r = assert(redis.connect(os.getenv('JOBRT_TEST_REDIS')))
      assert(r:subscribe('ch', function() end))
      local t = j.timer(); t:start(100, print)
      j.on_signal('SIGUSR2', print)
      j.sleep(0.01)
      assert(r:call('PING') == 'PONG')
      local p = require('jobrt.core.proc').spawn{ file = 'true', args = { 'true' } }
      p:wait()
      print('ok')]] }, { env = { JOBRT_CHECK_HANDLES = "1" } })
    assert.equal("", err)
    assert.equal("ok\n", out)
    assert.equal(0, code)
  end)
end)
