-- tests/chaos/jobs/chaos.lua: the handlers `make chaos` serves (tests/chaos/run.lua starts
-- `jobrt work tests/chaos/jobs --procs 2 --concurrency 20 --lease 2` three times).
--
-- Every handler writes the chaos ledger: an append-only list on a second redis-server that the
-- soak never faults (env CHAOS_LEDGER is its URL, CHAOS_LEDGER_SHA the SHA-1 of the fencing
-- script that tests/chaos/ledger.lua loads there). Each write goes through that script, which
-- stamps it with the ledger server's clock and refuses it when a larger fencing token (job.fence;
-- job.attempt from a worker without it) has started on the same job or LBQUEUE jobHash, as a
-- store that checks fencing tokens does. A run of a handler writes:
--   start     first thing, with the handler's own clock reading taken before any yield
--   progress  between the segments of a long job (each one fenced, so a handler that keeps
--             running after its lease was taken back shows up as refused writes)
--   end       last thing, with ok = true (it ran to the end) or false (a deliberate failure)
--
-- Jobs (the producer in run.lua chooses them; each queue has all of them):
--   ok     sleeps args.segs (seconds each; some add up to more than the lease), a little work on
--          job.redis after each segment (inside MULTI/EXEC when args.multi), succeeds
--   flaky  like ok, but raises the first time one of its runs gets to the end (retries = 1): it
--          must end successful, so a retry used up by anything else (a lost lease) shows
--   doom   like ok, but always raises (retries = 1): it must end in the failed set
--   slow   sleeps past its timeout (timeout = 1, retries = 0): it must end failed, timed out
--   parent a parent of a flow (tests/chaos/flows.lua, queue chaos_flow): runs after its
--          children; its start record carries what it saw in job.children (kids: q, id, s =
--          state, k = the child's result k), which the soak compares with the children's fate
--   probe  the stuck-worker probe run after the drain: holds its slot until args.n probes of
--          its round have started (or args.wait seconds passed), so that every live worker child
--          has to take its share
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local cjson = require 'cjson'

local LEDGER_URL = os.getenv('CHAOS_LEDGER')
local LEDGER_SHA = os.getenv('CHAOS_LEDGER_SHA')
local LEDGER_KEYS = { 'chaos:ledger', 'chaos:top' }   -- see tests/chaos/ledger.lua (the script)
local PID = jobrt.pid()

local conn, connecting
local runs = 0

-- The ledger connection of this process (one, made on first use; handlers share it).
local function ledger()
  while connecting do connecting:wait() end
  if conn then return conn end
  if not LEDGER_URL or not LEDGER_SHA then
    error('chaos jobs: CHAOS_LEDGER and CHAOS_LEDGER_SHA must be set (run them through tests/chaos/run.lua)')
  end
  connecting = jobrt.cond()
  local r, err = redis.connect(LEDGER_URL)
  local c = connecting
  connecting = nil
  c:broadcast()
  if not r then error('chaos ledger: cannot connect to ' .. LEDGER_URL .. ': ' .. tostring(err)) end
  conn = r
  return r
end

-- Appends one record for run `run` through the fencing script; true when it was accepted.
local function write(run, ev, extra)
  local rec = { ev = ev, q = run.q, id = run.id, att = run.att, hash = run.hash, k = run.k,
                fn = run.fn, pid = PID, rid = run.rid, due = run.due, fence = run.fence }
  for k, v in pairs(extra or {}) do rec[k] = v end
  local r = ledger()
  local acc, err = r:call('EVALSHA', LEDGER_SHA, #LEDGER_KEYS, LEDGER_KEYS[1], LEDGER_KEYS[2],
    ev, run.q, run.id, run.att, run.fence or '', run.lb_hash or '', cjson.encode(rec))
  if acc == nil then error('chaos ledger write failed: ' .. tostring(err)) end
  return acc == 1
end

-- A handler's job.redis answered with a reply of the wrong shape: the connection carried
-- another handler's commands (issue 8: job.redis must be the job's own connection).
local function crosstalk(run, what)
  pcall(function()
    ledger():call('RPUSH', 'chaos:crosstalk', cjson.encode{ q = run.q, id = run.id, att = run.att,
      pid = PID, replies = what })
  end)
end

-- A little work on the queue's Redis through the job's own connection: an INCR, or the same
-- inside MULTI/EXEC. Errors are not the point here (Redis is restarted under it on purpose), so
-- they are swallowed in both forms: raised, and nil, err returned. Every reply's shape is
-- checked when no call failed: INCR answers a number, MULTI "OK", an INCR inside it "QUEUED",
-- EXEC an array of one number; anything else is crosstalk.
local function work(job, run, multi)
  pcall(function()
    local r = job.redis
    local key = 'chaos:work:' .. job.queue
    if multi then
      local a = r:call('MULTI')
      if a == nil then return end
      local b = r:call('INCR', key)
      local c = r:call('EXEC')
      if b ~= nil and c ~= nil and (a ~= 'OK' or b ~= 'QUEUED' or type(c) ~= 'table' or type(c[1]) ~= 'number') then
        crosstalk(run, { 'MULTI', a, 'INCR', b, 'EXEC', c })
      end
    else
      local v = r:call('INCR', key)
      if v ~= nil and type(v) ~= 'number' then crosstalk(run, { 'INCR', v }) end
    end
  end)
end

-- A flaky job fails the first time one of its runs gets that far (whatever its attempt number,
-- so that a retry used up by a lost lease shows: it has one retry, for this failure only).
local function first_failure(run)
  return ledger():call('HSETNX', 'chaos:flaky', run.q .. '\t' .. run.id, run.rid) == 1
end

local function handler(kind, qtype)
  return function(args, job)
    local started = jobrt.now()                -- before any yield
    runs = runs + 1
    local run = { q = job.queue, id = job.id, att = job.attempt, hash = args.hash, k = args.k,
                  fn = kind, rid = PID .. ':' .. runs, due = args.due, fence = job.fence,
                  lb_hash = qtype == 'LBQUEUE' and args.hash or nil }
    write(run, 'start', { tl = string.format('%.6f', started) })
    local segs = args.segs or { 0.01 }
    for i = 1, #segs do
      jobrt.sleep(segs[i])
      work(job, run, args.multi)
      if i < #segs then write(run, 'progress') end
    end
    if kind == 'doom' or (kind == 'flaky' and first_failure(run)) then
      write(run, 'end', { ok = false })
      error(('chaos: deliberate failure of a %s job (attempt %d)'):format(kind, job.attempt))
    end
    write(run, 'end', { ok = true })
    return { k = args.k }
  end
end

-- A parent of a flow. job.children reads the queue Redis, which the soak restarts: it tries
-- again for up to 30 s rather than fail the job over it.
local function parent(args, job)
  local started = jobrt.now()                -- before any yield
  runs = runs + 1
  local run = { q = job.queue, id = job.id, att = job.attempt, k = args.k, fn = 'parent',
                rid = PID .. ':' .. runs, fence = job.fence }
  local kids
  for _ = 1, 60 do
    local ok, list = pcall(function() return job.children end)
    if ok then kids = list; break end
    jobrt.sleep(0.5)
  end
  if not kids then error('chaos: job.children could not be read for 30 s') end
  local seen = {}
  for i, c in ipairs(kids) do
    seen[i] = { q = c.queue, id = c.id, s = c.state, k = type(c.result) == 'table' and c.result.k or nil }
  end
  write(run, 'start', { tl = string.format('%.6f', started), kids = seen })
  jobrt.sleep(0.01)
  work(job, run, false)
  write(run, 'end', { ok = true })
  return { k = args.k }
end

local function probe(args, job)
  local r = ledger()
  local key = 'chaos:probe:' .. args.round
  local n = assert(r:call('INCR', key))
  local deadline = jobrt.monotime() + args.wait
  while n < args.n and jobrt.monotime() < deadline do
    jobrt.sleep(0.05)
    n = tonumber(assert(r:call('GET', key)))
  end
  assert(r:call('RPUSH', 'chaos:probes', cjson.encode{ round = args.round, q = job.queue, id = job.id, pid = PID }))
  return true
end

-- qtype: the queue's type (run.lua sets the same ones); an LBQUEUE job's writes are also
-- fenced on its jobHash
local function jobs(qtype)
  return {
    ok = handler('ok', qtype),
    flaky = { handler = handler('flaky', qtype), retries = 1 },
    doom = { handler = handler('doom', qtype), retries = 1 },
    slow = { handler = handler('slow', qtype), timeout = 1, retries = 0 },
    probe = probe,
  }
end

return {
  chaos_q = jobs('QUEUE'),
  chaos_lb = jobs('LBQUEUE'),
  chaos_del = jobs('DELQUEUE'),
  chaos_flow = { parent = parent },                  -- flows (tests/chaos/flows.lua)
}
