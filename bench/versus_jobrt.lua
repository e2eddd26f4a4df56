-- bench/versus_jobrt.lua: jobrt on the workloads of `make bench`, exactly as bench/peers/run.js
-- runs BullMQ and bee-queue (read that file's header for the workloads and what is measured).
--   ./jobrt run bench/versus_jobrt.lua REDIS-URL 'CONFIG-JSON'   -> one line of JSON: the figures
-- The worker is `jobrt work bench/versus_jobs` with the default log level (its per-job lines go
-- to /dev/null), concurrency from CONFIG, and --keep-ok 0 for the drain (finished records
-- removed, as BullMQ removeOnComplete and bee-queue removeOnSuccess).
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local proc = require 'jobrt.core.proc'
local cjson = require 'cjson'

local url = arg[1]
local conf = { memory = 100000, bulk = 50000, chunk = 1000, one = 1000, delayed = 2000, delay_ms = 200,
               concurrency = 50 }
for k, v in pairs(cjson.decode(arg[2] or '{}')) do conf[k] = v end
local BIN = os.getenv('JOBRT_BIN') or ((os.getenv('PWD') or '.') .. '/jobrt')
local debug_on = os.getenv('BENCH_DEBUG')
local function note(s) if debug_on then io.stderr:write('jobrt: ', s, '\n') end end

local now_ms = function() return jobrt.now() * 1000 end

local probe = assert(redis.connect(url))
local function info(section) return assert(probe:call('INFO', section)) end
local function redis_cpu()
  local s = info('cpu')
  return (tonumber(s:match('used_cpu_sys:([%d%.]+)')) + tonumber(s:match('used_cpu_user:([%d%.]+)'))) * 1e6
end
local function commands()
  local total = 0
  for name, calls in info('commandstats'):gmatch('cmdstat_([%w|_]+):calls=(%d+)') do
    if name ~= 'info' then total = total + tonumber(calls) end
  end
  return total
end
local function commands_of(name)
  return tonumber(info('commandstats'):match('cmdstat_' .. name .. ':calls=(%d+)')) or 0
end
local function used_memory() return tonumber(info('memory'):match('used_memory:(%d+)')) end
local function cpu_of_pid(pid)        -- utime + stime, µs (clock ticks of 10 ms)
  local f = assert(io.open('/proc/' .. pid .. '/stat'))
  local s = f:read('*a')
  f:close()
  local rest = s:sub(s:find(')', 1, true) + 2)
  local fields = {}
  for x in rest:gmatch('%S+') do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) * 10000
end
local function pct(t, p)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  return s[math.max(1, math.ceil(#s * p))]
end

local KEYS = {}
for _, k in ipairs({ 'wait', 'ready', 'active', 'stats' }) do KEYS[k] = 'jobrt:{Q}:' .. k end

-- A worker process; its output goes to /dev/null (the default log level writes a line per job).
local function start_worker(keep_ok)
  local args = { 'sh', '-c', 'exec "$0" "$@" >/dev/null 2>&1', BIN, 'work', 'bench/versus_jobs',
                 '--redis', url, '--concurrency', tostring(conf.concurrency) }
  if keep_ok then args[#args + 1] = '--keep-ok'; args[#args + 1] = tostring(keep_ok) end
  local p = assert(proc.spawn{ file = 'sh', args = args })
  local deadline = jobrt.monotime() + 10
  while (probe:call('ZCARD', 'jobrt:{workers}') or 0) == 0 do
    if p:exited() or jobrt.monotime() > deadline then error('the jobrt worker did not start') end
    jobrt.sleep(0.002)
  end
  return p
end
local function stop_worker(p)
  p:kill('SIGTERM')
  p:wait()
end

local function noops(n, name)
  local t = {}
  for i = 1, n do t[i] = { job = name or 'noop', args = {} } end
  return t
end

local out = { system = 'jobrt' }
local q = jobrt.connect(url)
local function fresh()
  probe:call('FLUSHALL')
  assert(probe:call('HSET', 'RESERVED:QCONFIG', 'Q', 'QUEUE'))
end

-- memory per waiting job
note('memory')
fresh()
do
  local m0 = used_memory()
  for i = 1, conf.memory, conf.chunk do q:enqueueJobs('Q', noops(math.min(conf.chunk, conf.memory - i + 1))) end
  out.mem_per_job = (used_memory() - m0) / conf.memory
end

-- bulk enqueue, then drain by one worker process
note('bulk')
fresh()
do
  local c0 = redis_cpu()
  local t0 = now_ms()
  for i = 1, conf.bulk, conf.chunk do q:enqueueJobs('Q', noops(math.min(conf.chunk, conf.bulk - i + 1))) end
  local t1 = now_ms()
  out.enqueue_rate = conf.bulk / ((t1 - t0) / 1000)
  out.redis_us_per_enqueue = (redis_cpu() - c0) / conf.bulk
  local function remaining()
    return probe:call('LLEN', KEYS.wait) + probe:call('ZCARD', KEYS.ready) + probe:call('ZCARD', KEYS.active)
  end
  local p = start_worker(0)
  local r0, s0, w0, c2
  while true do
    local r = remaining()
    if r < conf.bulk then
      r0, s0, w0, c2 = r, now_ms(), cpu_of_pid(p:pid()), redis_cpu()
      out.calls0 = commands_of('evalsha')
      break
    end
    jobrt.sleep(0.002)
  end
  while remaining() > 0 do jobrt.sleep(0.005) end
  local s1 = now_ms()
  out.process_rate = r0 / ((s1 - s0) / 1000)
  out.worker_us_per_job = (cpu_of_pid(p:pid()) - w0) / r0
  out.redis_us_per_process = (redis_cpu() - c2) / r0
  out.calls_per_job = (commands_of('evalsha') - out.calls0) / r0
  out.calls0 = nil
  stop_worker(p)
end

-- one at a time, then delayed jobs: one idle worker, records kept (the defaults)
fresh()
do
  local p = start_worker(nil)
  note('one at a time')
  for _ = 1, 20 do q:run('Q', 'stamp', {}) end                     -- warm up
  local start, seen = {}, {}
  local k0 = commands()
  for i = 1, conf.one do
    local t = now_ms()
    local v = q:run('Q', 'stamp', {})
    seen[i] = now_ms() - t
    start[i] = v - t
  end
  out.cmds_per_job = (commands() - k0) / conf.one
  out.start_p50, out.start_p99 = pct(start, 0.5), pct(start, 0.99)
  out.seen_p50, out.seen_p99 = pct(seen, 0.5), pct(seen, 0.99)

  note('delayed')
  local done0 = tonumber(probe:call('HGET', KEYS.stats, 'total-completed')) or 0
  local ids = {}
  for i = 1, conf.delayed do                  -- one at a time, each due delay_ms after its enqueue
    local due = now_ms() + conf.delay_ms
    ids[i] = q:enqueueJob('Q', 'late', { due = due }, { timestamp = due / 1000 })
  end
  local deadline = jobrt.monotime() + 60
  while (tonumber(probe:call('HGET', KEYS.stats, 'total-completed')) or 0) < done0 + conf.delayed do
    if jobrt.monotime() > deadline then error('the delayed jobs did not finish within 60 s') end
    jobrt.sleep(0.01)
  end
  local late = {}
  local wg = jobrt.waitgroup()
  for c = 1, 20 do
    wg:spawn(function()
      for i = c, #ids, 20 do late[i] = tonumber(probe:call('HGET', 'jobrt:{Q}:job:' .. ids[i], 'result-value')) end
    end)
  end
  wg:wait()
  out.late_p50, out.late_p99 = pct(late, 0.5), pct(late, 0.99)
  out.late_max = math.max(unpack(late))
  stop_worker(p)
end
probe:call('FLUSHALL')
q:close()
probe:close()
io.stdout:write(cjson.encode(out), '\n')
return 0
