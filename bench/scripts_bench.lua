-- bench/scripts_bench.lua: what the queue scripts cost Redis.
--   ./jobrt run bench/scripts_bench.lua [REDIS-URL] [JOBS]      (URL default: $JOBRT_REDIS)
-- 1. memory per waiting job: INFO memory used_memory before and after enqueueing JOBS (default
--    100000) small QUEUE jobs;
-- 2. Redis commands per job for enqueue + reserve + complete: INFO commandstats before and after
--    each phase, counting EVALSHA and every redis.call inside the scripts; reserve and complete
--    run in batches of 50, as a busy worker does.
-- It uses a queue of its own (bench-scripts-<time>) and deletes its keys at the end; other
-- traffic on the server during the run would be counted too, so use a quiet server.
local redis = require 'jobrt.redis'
local ops = require 'jobrt.ops'
local jobrt = require 'jobrt'

local url = arg and arg[1] or os.getenv('JOBRT_REDIS')
local N = tonumber(arg and arg[2]) or 100000
local BATCH, CONNS = 50, 16
if not url then
  io.stderr:write('usage: jobrt run bench/scripts_bench.lua REDIS-URL [JOBS]   (or set JOBRT_REDIS)\n')
  return 2
end

local r = assert(redis.connect(url))
local o = assert(ops.new(r))
local queue = ('bench-scripts-%d'):format(os.time())
assert(o:set_queue_type(queue, 'QUEUE'))

local function used_memory()
  r:call('MEMORY', 'PURGE')      -- jemalloc: return freed pages so the figure is stable
  return tonumber(r:call('INFO', 'memory'):match('used_memory:(%d+)'))
end

-- total calls over every command except INFO (the measuring itself) and the type lookup
local function commands()
  local total = 0
  for name, calls in r:call('INFO', 'commandstats'):gmatch('cmdstat_([%w|_]+):calls=(%d+)') do
    if name ~= 'info' and name ~= 'memory' then total = total + tonumber(calls) end
  end
  return total
end

local function phase(name, fn)
  local c0, t0 = commands(), jobrt.now()
  fn()
  local dt, dc = jobrt.now() - t0, commands() - c0
  io.write(('%-9s %8d jobs %8.2f s %9.0f jobs/s %6.2f commands/job\n'):format(name, N, dt, N / dt, dc / N))
  return dc
end

-- enqueue N jobs over CONNS connections (each waits for its reply: no pipelining)
local conns = {}
for i = 1, CONNS do conns[i] = assert(ops.new(assert(redis.connect(url)))) end
for i = 1, CONNS do assert(conns[i]:queue_type(queue)) end   -- warm the type caches

local mem0 = used_memory()
local total = 0
total = total + phase('enqueue', function()
  local wg = jobrt.waitgroup()
  for c = 1, CONNS do
    wg:spawn(function()
      for i = c, N, CONNS do
        assert(conns[c]:enqueue(queue, 'send', ('{"i":%d}'):format(i)))
      end
    end)
  end
  assert(wg:wait())
end)
local mem1 = used_memory()

local held = {}
total = total + phase('reserve', function()
  while true do
    local res = assert(o:reserve(queue, 'bench-worker', BATCH, 600))
    if #res.jobs == 0 then break end
    held[#held + 1] = res.jobs
  end
end)
total = total + phase('complete', function()
  for _, jobs in ipairs(held) do
    local outs = {}
    for i, j in ipairs(jobs) do outs[i] = { id = j.id, attempt = j.attempt, ok = true, value = '{"ok":true}' } end
    assert(o:complete(queue, 'bench-worker', outs))
  end
end)

local st = assert(o:stats(queue))
io.write(('\nmemory per waiting job: %.0f bytes (used_memory %d -> %d for %d jobs)\n'):format(
  (mem1 - mem0) / N, mem0, mem1, N))
io.write(('commands per job, enqueue + reserve + complete (batches of %d): %.2f\n'):format(BATCH, total / N))
io.write(('completed %d, pending %d, executing %d\n'):format(st.completed, st.pending, st.executing))

-- clean up: every key of the bench queue, and its type
local cursor = '0'
repeat
  local res = assert(r:call('SCAN', cursor, 'MATCH', 'jobrt:{' .. queue .. '}:*', 'COUNT', 1000))
  cursor = res[1]
  if #res[2] > 0 then assert(r:call('UNLINK', unpack(res[2]))) end
until cursor == '0'
r:call('HDEL', 'RESERVED:QCONFIG', queue)
for i = 1, CONNS do conns[i].r:close() end
r:close()
return 0
