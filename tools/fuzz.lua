-- tools/fuzz.lua: what `make fuzz` does. Runs each libFuzzer target for the given seconds, one
-- after the other, and prints executions per second, coverage and crashes per target.
--   ./jobrt run tools/fuzz.lua SECONDS TARGET...
-- Corpus: tests/fuzz/corpus/TARGET/ (the seeds, read) and build/fuzz/corpus/TARGET/ (what the
-- runs find, kept between runs). A crash is saved in build/fuzz/crashes/TARGET/ and makes the
-- exit status 1; turn it into a regression (tests/fuzz/regressions/TARGET/, replayed by
-- `make test`) once it is fixed. Each target's full output: build/fuzz/TARGET.log.
local proc = require 'jobrt.core.proc'
local jobrt = require 'jobrt'

local seconds = tonumber(arg[1]) or 60
local targets = {}
for i = 2, #arg do targets[#targets + 1] = arg[i] end
if #targets == 0 then targets = { 'json', 'url', 'args', 'jobfile', 'scripts', 'resp', 'http' } end

local root = os.getenv('PWD') or '.'
local BINARY = { resp = 'build/fuzz/resp_fuzz', http = 'build/fuzz-http' }
local EXTRA = { http = '-max_len=8192' }     -- as make fuzz-http runs it

local function sh(cmd) assert(os.execute(cmd) == 0, cmd) end

local rows, crashed = {}, false
for _, t in ipairs(targets) do
  local bin = BINARY[t] or 'build/fuzz/lua_fuzz'
  local newdir, crashdir = 'build/fuzz/corpus/' .. t, 'build/fuzz/crashes/' .. t
  sh(("mkdir -p '%s' '%s' 'tests/fuzz/corpus/%s'"):format(newdir, crashdir, t))
  local args = { bin, '-max_total_time=' .. seconds, '-print_final_stats=1', '-timeout=10',
                 '-rss_limit_mb=4096', '-detect_leaks=0', '-artifact_prefix=' .. crashdir .. '/',
                 newdir, 'tests/fuzz/corpus/' .. t }
  if EXTRA[t] then table.insert(args, 2, EXTRA[t]) end
  local dict = 'tests/fuzz/dict/' .. t .. '.dict'
  local f = io.open(dict)
  if f then
    f:close()
    table.insert(args, 2, '-dict=' .. dict)
  end
  io.stderr:write(('fuzz %s: %d s ...\n'):format(t, seconds))
  local env = {}
  local ffi = require 'ffi'
  pcall(ffi.cdef, 'extern char **environ;')
  local i = 0
  while ffi.C.environ[i] ~= nil do
    env[#env + 1] = ffi.string(ffi.C.environ[i])
    i = i + 1
  end
  env[#env + 1] = 'JOBRT_FUZZ_TARGET=' .. t
  env[#env + 1] = 'JOBRT_FUZZ_ROOT=' .. root
  env[#env + 1] = 'ASAN_OPTIONS=detect_leaks=0:abort_on_error=0'
  env[#env + 1] = 'UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1'
  local t0 = jobrt.monotime()
  local p = assert(proc.spawn{ file = bin, args = args, env = env, capture = true })
  local code = p:wait()
  local out, err = p:output()
  local log = assert(io.open('build/fuzz/' .. t .. '.log', 'w'))
  log:write(out, err)
  log:close()
  local text = out .. err
  local cov, ft, corp
  for c, fe, co in text:gmatch('cov: (%d+) ft: (%d+) corp: (%d+)') do cov, ft, corp = c, fe, co end
  local execs = text:match('stat::number_of_executed_units:%s*(%d+)') or '?'
  local eps = text:match('stat::average_exec_per_sec:%s*(%d+)') or '?'
  local lines = text:match('Lua lines reached: (%d+)') or '-'
  local crash = code ~= 0
  crashed = crashed or crash
  rows[#rows + 1] = { t, ('%.0f'):format(jobrt.monotime() - t0), execs, eps, cov or '?', lines, ft or '?', corp or '?',
                      crash and ('CRASH (exit %d): see build/fuzz/%s.log'):format(code, t) or 'none' }
end

io.stdout:write(('\n%-8s %7s %12s %9s %6s %9s %8s %7s  %s\n'):format('target', 'seconds', 'executions', 'execs/s',
  'C edges', 'Lua lines', 'features', 'corpus', 'crashes'))
for _, r in ipairs(rows) do
  io.stdout:write(('%-8s %7s %12s %9s %6s %9s %8s %7s  %s\n'):format(unpack(r)))
end
io.stdout:write("C edges: instrumented C edges reached (libFuzzer's cov; libraries such as hiredis and LuaJIT are not\n" ..
  "instrumented); Lua lines: distinct Lua lines any input reached; features: libFuzzer's finer measure,\n" ..
  "Lua lines included\n")
return crashed and 1 or 0
