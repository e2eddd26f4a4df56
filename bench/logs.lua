-- bench/logs.lua: what the worker's per-job log line costs. The same no-op jobs are served by
-- one worker process three times: without the line (--log-level warn), with it as text, and
-- with it as JSON; stderr goes to a file. The figure is the worker's CPU time (user + system,
-- from /proc/PID/stat) per job; the baseline is the run without the line.
--   ./jobrt run bench/run.lua logs          (BENCH_JOBS=N to change the number of jobs)
local jobrt = require 'jobrt'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'

local M = {}

local TICKS = 100          -- clock ticks per second (sysconf(_SC_CLK_TCK) on Linux)
do
  local f = io.popen('getconf CLK_TCK 2>/dev/null')
  if f then
    TICKS = tonumber(f:read('*a')) or TICKS
    f:close()
  end
end

-- CPU seconds (user + system) the process pid has used so far
local function cpu_seconds(pid)
  local f = assert(io.open('/proc/' .. pid .. '/stat'))
  local s = f:read('*a')
  f:close()
  local rest = s:match('^%d+ %b() (.*)$')
  local fields = {}
  for w in rest:gmatch('%S+') do fields[#fields + 1] = w end
  -- after the name: state is field 3 of stat, utime 14 and stime 15
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICKS
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Serves n queued no-op jobs with the given log options; returns CPU seconds per job and the
-- bytes logged.
local function one_run(server, o, n, log_args)
  local r = h.redis(server.url)
  r:call('FLUSHALL')
  assert(o:set_queue_type('BENCH', 'QUEUE'))
  assert(o:set_queue_type('BENCHDEL', 'DELQUEUE'))
  local wg = jobrt.waitgroup()
  for c = 1, 50 do
    wg:spawn(function() for _ = c, n, 50 do assert(o:enqueue('BENCH', 'noop', '{}', {})) end end)
  end
  wg:wait()
  local log = os.tmpname()
  local cmd = { 'exec', shell_quote(h.jobrt_bin), 'work', 'bench/jobs', '--redis', server.url,
                '--concurrency', '50' }
  for _, a in ipairs(log_args) do cmd[#cmd + 1] = a end
  cmd[#cmd + 1] = '2>' .. shell_quote(log)
  local proc = require 'jobrt.core.proc'
  local p = assert(proc.spawn{ file = '/bin/sh', args = { '/bin/sh', '-c', table.concat(cmd, ' ') } })
  h.spawned[p] = 'bench worker'
  local ok, used = pcall(function()
    h.wait_for(function() return r:call('ZCARD', 'jobrt:{workers}') > 0 end, 10, 'the bench worker')
    local base = cpu_seconds(p:pid())      -- start-up (loading, connecting) is not the jobs' cost
    h.wait_for(function() return o:stats('BENCH').completed >= n end, 300, 'the bench jobs')
    return cpu_seconds(p:pid()) - base
  end)
  p:kill('SIGTERM')                        -- stopped whatever happened
  p:wait()
  if not ok then error(used, 0) end
  local f = io.open(log)
  local bytes = f and #f:read('*a') or 0
  if f then f:close() end
  os.remove(log)
  r:close()
  return used / n, bytes
end

function M.run(server, report)
  local r = h.redis(server.url)
  local o = assert(ops_mod.new(r))
  local n = tonumber(os.getenv('BENCH_JOBS')) or 30000
  local rounds = 3
  local best = {}
  local modes = {
    { 'none', { '--log-level', 'warn' } },
    { 'text', { '--log-format', 'text' } },
    { 'json', { '--log-format', 'json' } },
  }
  -- alternate the modes, keep each one's best round (the machine is noisy)
  for _ = 1, rounds do
    for _, m in ipairs(modes) do
      local per_job, bytes = one_run(server, o, n, m[2])
      if not best[m[1]] or per_job < best[m[1]].per_job then best[m[1]] = { per_job = per_job, bytes = bytes } end
    end
  end
  local none = best.none.per_job * 1e6
  report(('worker CPU us/job, no per-job line (%d jobs)'):format(n), none, 'same', none, 'us')
  report(('worker CPU us/job, text line per job (%d B/job)'):format(math.floor(best.text.bytes / n)),
    best.text.per_job * 1e6, 'no per-job line', none, 'us')
  report(('worker CPU us/job, JSON line per job (%d B/job)'):format(math.floor(best.json.bytes / n)),
    best.json.per_job * 1e6, 'no per-job line', none, 'us')
  r:close()
end

return M
