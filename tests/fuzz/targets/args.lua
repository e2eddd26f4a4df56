-- Fuzz target args: the command line of every command (jobrt.args.parse and each command's own
-- checks in jobrt.commands, jobrt.worker_cli and jobrt.cli), stopping where a command would
-- reach Redis or read job files: jobrt.client.open, jobrt.worker_cli.load and
-- jobrt.watcher.sources answer "not here" in this target (a fuzzer has no Redis; the job-file
-- loader is the jobfile target; the watcher would walk whatever directory an input names). `run`,
-- `-e` and `repl` are left out: they run code.
-- Invariants: nothing raises; every command returns an exit status 0, 1 or 2; a usage error
-- (2) says why on stderr in one line.
local args = require 'jobrt.args'
local client = require 'jobrt.client'
local worker_cli = require 'jobrt.worker_cli'
local cli = require 'jobrt.cli'
local watcher = require 'jobrt.watcher'
local util = require 'tests.fuzz.util'
local ffi = require 'ffi'
pcall(ffi.cdef, 'int unsetenv(const char *name); int setenv(const char *name, const char *value, int overwrite);')

-- output goes nowhere, but what was written is kept for the checks
local written = {}
local sink = {}
function sink:write(...)
  for i = 1, select('#', ...) do written[#written + 1] = tostring((select(i, ...))) end
  return self
end
function sink:flush() return self end
local out_sink, err_sink = setmetatable({}, { __index = sink }), setmetatable({}, { __index = sink })

local stub_open = function() return nil, 'no Redis in the fuzzer', false end
local stub_load = function() return nil, 'no job files in the fuzzer' end
local stub_sources = function() return {} end

-- Runs fn(...) with the stubs and the sinks in place, and puts everything back afterwards (the
-- regression spec runs this target inside the test suite's own process).
local function sandboxed(fn, ...)
  local core = require 'jobrt.core'
  local saved = { client.open, worker_cli.load, io.stdout, io.stderr, os.getenv('JOBRT_REDIS'), core.log_level(),
                  watcher.sources }
  client.open, worker_cli.load, io.stdout, io.stderr = stub_open, stub_load, out_sink, err_sink
  watcher.sources = stub_sources
  local r = { pcall(fn, ...) }
  client.open, worker_cli.load, io.stdout, io.stderr = saved[1], saved[2], saved[3], saved[4]
  watcher.sources = saved[7]
  if saved[5] then ffi.C.setenv('JOBRT_REDIS', saved[5], 1) else ffi.C.unsetenv('JOBRT_REDIS') end
  core.set_log_level(saved[6])
  return unpack(r)
end

local COMMANDS = { 'enqueue', 'queue-type', 'stats', 'failed', 'job', 'delete', 'work', 'cli', 'parse' }
local KINDS = { 'flag', 'string', 'number', 'count', 'seconds' }

return function(data)
  local r = util.reader(data)
  local which = COMMANDS[r:int(#COMMANDS) + 1]
  local argv = util.split(r:rest(), '\0')
  if argv[#argv] == '' then argv[#argv] = nil end
  written = {}
  local ok, code
  if which == 'parse' then
    -- args.parse itself, with a spec made of the first words
    local spec = {}
    for i = 1, math.min(#argv, 4) do spec[argv[i]:gsub('^%-+', '')] = KINDS[(#argv[i] % #KINDS) + 1] end
    ok, code = sandboxed(args.parse, argv, spec, 'jobrt fuzz')
    assert(ok, 'args.parse raised: ' .. tostring(code))
    return
  elseif which == 'cli' then
    local first = argv[1]
    if first == 'run' or first == '-e' or first == 'repl' then return end
    for _, a in ipairs(argv) do if a == '-e' or a == 'run' or a == 'repl' then return end end
    ok, code = sandboxed(cli.main, argv)   -- --redis sets JOBRT_REDIS: put back afterwards
  elseif which == 'work' then
    ok, code = sandboxed(worker_cli.main, argv, 'work')
  else
    ok, code = sandboxed(require('jobrt.commands').main, argv, which)
  end
  assert(ok, which .. ' raised: ' .. tostring(code))
  assert(code == 0 or code == 1 or code == 2, which .. ' returned ' .. tostring(code))
  if code == 2 then
    local err = table.concat(written)
    assert(err ~= '', which .. ': a usage error without a message')
  end
end
