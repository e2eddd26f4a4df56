-- bench/script_cost.lua: what the queue scripts cost redis-server, in instructions (callgrind),
-- per job and phase. Instruction counts repeat to within a fraction of a percent from run to
-- run, where CPU times on this machine swing by half: use this to tell whether a change of a
-- script made it cheaper, and `make bench` (section versus) for what it means in time.
--   ./jobrt run bench/script_cost.lua [JOBS]        (default 2000; needs valgrind)
-- Starts its own redis-server under `valgrind --tool=callgrind` and, for each phase, zeroes the
-- counters, runs the phase, dumps them, and prints instructions per job:
--   enqueue        JOBS single enqueues (EVALSHA enqueue.lua each), 16 at a time
--   enqueue_bulk   JOBS enqueued with the bulk call (enqueue_bulk.lua), ops.BULK_MAX per call
--   reserve50      reserve in batches of 50 until the queue is empty
--   complete50     complete those in batches of 50 (records kept 1 h)
--   drain50        reserve 50 + complete 50 with records removed (keep-ok 0), as the bench worker
--   due50          the same for delayed jobs once they are due (the due set)
--   one            enqueue, reserve 1, complete 1: one job at a time (JOBS / 10 jobs)
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local ops_mod = require 'jobrt.ops'
local proc = require 'jobrt.core.proc'

local N = tonumber(arg[1]) or 2000
local dir = ('/tmp/jobrt-cost-%d'):format(jobrt.pid())
os.execute("mkdir -p '" .. dir .. "'")
do local b = require('jobrt.core').random_bytes(4); math.randomseed(b:byte(1) * 65536 + b:byte(2) * 256 + b:byte(3)) end
local port = math.random(20000, 59999)
local p = assert(proc.spawn{ file = 'valgrind', capture = true, args = { 'valgrind', '--tool=callgrind',
  '--callgrind-out-file=' .. dir .. '/cg.out', 'redis-server', '--port', tostring(port), '--bind', '127.0.0.1',
  '--save', '', '--appendonly', 'no', '--dir', dir } })
local url = ('redis://127.0.0.1:%d'):format(port)
local r
for _ = 1, 300 do
  r = redis.connect(url)
  if r then break end
  jobrt.sleep(0.1)
end
assert(r, 'redis-server under valgrind did not answer')

-- callgrind_control FLAG for the server. Valgrind takes the command only while redis-server
-- runs code, so PING it until callgrind_control has its answer.
local function cg(flag)
  local c = assert(proc.spawn{ file = 'callgrind_control', args = { 'callgrind_control', flag, tostring(p:pid()) },
                               capture = true })
  while not c:exited() do
    r:call('PING')
    jobrt.sleep(0.01)
  end
  c:wait()
end
local results = {}
-- total instructions of the newest dump file (COST_KEEP=1 keeps a copy as /tmp/cost-<phase>.out,
-- for callgrind_annotate)
local seen = {}
local function last_dump_ir()
  local f = io.popen(("ls '%s'"):format(dir))
  local path
  for name in f:lines() do
    if name:match('^cg%.out%.') and not seen[name] then path = dir .. '/' .. name; seen[name] = true end
  end
  f:close()
  assert(path, 'callgrind wrote no dump')
  local d = assert(io.open(path))
  local s = d:read('*a')
  d:close()
  if os.getenv('COST_KEEP') then os.execute("cp '" .. path .. "' /tmp/cost-" .. (#results + 1) .. '.out') end
  return tonumber(s:match('\nsummary: (%d+)') or s:match('\ntotals: (%d+)'))
end

local function phase(name, jobs, fn)
  cg('-z')
  fn()
  cg('--dump')
  local ir = last_dump_ir()
  results[#results + 1] = { name, ir / jobs }
  io.stdout:write(('%-14s %8d jobs %12.0f instructions/job\n'):format(name, jobs, ir / jobs))
  io.stdout:flush()
end

local o = assert(ops_mod.new(r))
local o0 = assert(ops_mod.new(r, { ttl_ok = 0 }))
r:call('FLUSHALL')
assert(o:set_queue_type('C', 'QUEUE'))
-- warm up: scripts loaded and compiled, the keys exist
for _ = 1, 20 do assert(o:enqueue('C', 'noop', '{}', {})) end
while #assert(o:reserve('C', 'w', 50, 600)).jobs > 0 do end
r:call('DEL', 'jobrt:{C}:active')

local conns = {}
for i = 1, 16 do conns[i] = assert(ops_mod.new(assert(redis.connect(url)))) end
phase('enqueue', N, function()
  local wg = jobrt.waitgroup()
  for c = 1, 16 do
    wg:spawn(function() for _ = c, N, 16 do assert(conns[c]:enqueue('C', 'noop', '{}', {})) end end)
  end
  assert(wg:wait())
end)

local held = {}
phase('reserve50', N, function()
  while true do
    local res = assert(o:reserve('C', 'w', 50, 600))
    if #res.jobs == 0 then break end
    held[#held + 1] = res.jobs
  end
end)
phase('complete50', N, function()
  for _, jobs in ipairs(held) do
    local outs = {}
    for i, j in ipairs(jobs) do outs[i] = { id = j.id, attempt = j.attempt, ok = true, value = 'null' } end
    assert(o:complete('C', 'w', outs))
  end
end)

if o.enqueue_bulk then
  phase('enqueue_bulk', N, function()
    for first = 1, N, ops_mod.BULK_MAX do
      local jobs = {}
      for i = 1, math.min(ops_mod.BULK_MAX, N - first + 1) do jobs[i] = { 'noop', '{}' } end
      assert(o:enqueue_bulk('C', jobs))
    end
  end)
else
  for c = 1, 16 do
    for _ = c, N, 16 do assert(conns[c]:enqueue('C', 'noop', '{}', {})) end
  end
end

phase('drain50', N, function()
  while true do
    local res = assert(o0:reserve('C', 'w', 50, 600))
    if #res.jobs == 0 then break end
    local outs = {}
    for i, j in ipairs(res.jobs) do outs[i] = { id = j.id, attempt = j.attempt, ok = true, value = 'null' } end
    assert(o0:complete('C', 'w', outs))
  end
end)

-- delayed jobs (due set), reserved and completed in batches of 50 once due
do
  local t = r:call('TIME')
  local at = tonumber(t[1]) + tonumber(t[2]) / 1e6 + 1
  for first = 1, N, 100 do
    local jobs = {}
    for i = 1, math.min(100, N - first + 1) do jobs[i] = { 'noop', '{}', { timestamp = at } } end
    assert(o:enqueue_bulk('C', jobs))
  end
  repeat
    jobrt.sleep(0.05)
    t = r:call('TIME')
  until tonumber(t[1]) + tonumber(t[2]) / 1e6 > at + 0.01
end
phase('due50', N, function()
  while true do
    local res = assert(o0:reserve('C', 'w', 50, 600))
    if #res.jobs == 0 then break end
    local outs = {}
    for i, j in ipairs(res.jobs) do outs[i] = { id = j.id, attempt = j.attempt, ok = true, value = 'null' } end
    assert(o0:complete('C', 'w', outs))
  end
end)

local n1 = math.floor(N / 10)
phase('one', n1, function()
  for _ = 1, n1 do
    assert(o:enqueue('C', 'noop', '{}', {}))
    local j = assert(o:reserve('C', 'w', 50, 600)).jobs[1]
    assert(o:complete('C', 'w', { { id = j.id, attempt = j.attempt, ok = true, value = 'null' } }))
  end
end)

for _, c in ipairs(conns) do c.r:close() end
r:close()
p:kill('SIGTERM')
p:wait()
os.execute("rm -rf '" .. dir .. "'")
return 0
