-- tests/09-cluster/load.lua: a busy cluster for the failover and reshard specs: queues placed
-- on chosen primaries, `jobrt work` processes serving them, producers enqueueing in this process,
-- and the check that every job Redis acknowledged was run to a successful end.
--
--   local load = require 'tests.09-cluster.load'
--   local names = load.queues_on(cl, servers, prefix)  -- one queue name per server, each served by it
--   local L = load.start(cl, names, { workers = 2, concurrency = 20, lease = 2, rate = 0.004 })
--       workers: `jobrt work` processes (the job `work` sleeps 5 ms and returns its n);
--       producers: one coroutine per queue, enqueueing with ids p<queue>-<n> through the plain
--       address of one node; an enqueue that fails (a failover, a migration) is sent again
--       with the same id until it is acknowledged (ids make that safe)
--   L:wait_acked(n[, timeout])  until n more enqueues were acknowledged since the call
--   L:stop_producers()
--   L:check_all_done(timeout) -> acked, retried: waits until every acknowledged id's record is
--       finished and successful (raises naming the missing ids otherwise)
--   L:stop()   SIGTERM to the workers; raises when one exits non-zero
local jobrt = require 'jobrt'
local cluster = require 'jobrt.cluster'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

local M = {}
local L = {}
L.__index = L

-- A queue name for each server in `servers`, whose slot that server serves.
function M.queues_on(cl, servers, prefix)
  local names = {}
  for i, s in ipairs(servers) do
    for n = 1, 100000 do
      local q = ('%s%d_%d'):format(prefix, i, n)
      if cl:primary_of(cluster.keyslot('{' .. q .. '}')) == s then names[i] = q; break end
    end
  end
  return names
end

-- The live primaries (servers), in port order.
function M.primaries(cl)
  local out = {}
  for _, port in ipairs(cl:ports()) do
    local c = cl:node(port)
    local role = c:call('ROLE')
    c:close()
    if type(role) == 'table' and role[1] == 'master' then out[#out + 1] = cl:server(port) end
  end
  table.sort(out, function(a, b) return a.port < b.port end)
  return out
end

function M.start(cl, names, opts)
  opts = opts or {}
  local self = setmetatable({ cl = cl, names = names, acked = {}, nacked = 0, retried = 0,
                              producing = true, producers = 0, workers = {} }, L)
  local src = { 'local jobrt = require "jobrt"', 'return {' }
  for _, q in ipairs(names) do
    src[#src + 1] = ('  %s = { _type = "QUEUE", work = function(args) jobrt.sleep(0.005) return args.n end },'):format(q)
  end
  src[#src + 1] = '}'
  self.dir = ws.jobs_dir{ ['load.lua'] = table.concat(src, '\n') }
  for i = 1, opts.workers or 2 do
    self.workers[i] = ws.start_worker(self.dir, { '--concurrency', tostring(opts.concurrency or 20),
      '--lease', tostring(opts.lease or 2) }, cl.url, 1)
  end
  self.q = assert(jobrt.connect(cl.url))
  for qi, q in ipairs(names) do
    self.producers = self.producers + 1
    jobrt.spawn(function()
      local n = 0
      while self.producing do
        n = n + 1
        local id = ('p%d-%d'):format(qi, n)
        while true do
          local ok = pcall(self.q.enqueueJob, self.q, q, 'work', { n = n }, { id = id })
          if ok then break end
          self.retried = self.retried + 1
          jobrt.sleep(0.05)
        end
        self.acked[#self.acked + 1] = { q, id }
        self.nacked = self.nacked + 1
        jobrt.sleep(opts.rate or 0.004)
      end
      self.producers = self.producers - 1
    end)
  end
  return self
end

function L:wait_acked(n, timeout)
  local want = self.nacked + n
  h.wait_for(function() return self.nacked >= want end, timeout or 30, n .. ' more enqueues acknowledged')
end

function L:stop_producers()
  self.producing = false
  h.wait_for(function() return self.producers == 0 end, 30, 'the producers to stop')
end

-- Every acknowledged job finished successfully: waits for it, then returns the counts.
function L:check_all_done(timeout)
  local r = assert(require('jobrt.redis').connect(self.cl.url))
  local pending = {}
  for i, a in ipairs(self.acked) do pending[i] = a end
  local deadline = jobrt.monotime() + (timeout or 60)
  while #pending > 0 do
    local left = {}
    for _, a in ipairs(pending) do
      local rec = r:call('HMGET', 'jobrt:{' .. a[1] .. '}:job:' .. a[2], 'state', 'result')
      if not (type(rec) == 'table' and rec[1] == 'finished' and rec[2] == 'successful') then
        left[#left + 1] = a
      end
    end
    pending = left
    if #pending > 0 then
      if jobrt.monotime() > deadline then
        local show = {}
        for i = 1, math.min(10, #pending) do
          local a = pending[i]
          local rec = r:call('HGETALL', 'jobrt:{' .. a[1] .. '}:job:' .. a[2])
          show[i] = a[1] .. '/' .. a[2] .. '=' .. (type(rec) == 'table' and table.concat(rec, ',') or tostring(rec))
        end
        r:close()
        error(('%d of %d acknowledged jobs did not finish successfully: %s'):format(#pending, #self.acked,
          table.concat(show, '; ')), 2)
      end
      jobrt.sleep(0.2)
    end
  end
  r:close()
  return #self.acked, self.retried
end

function L:stop()
  self.producing = false
  local bad = {}
  for _, p in ipairs(self.workers) do
    local code, out, err = ws.stop_worker(p)
    if os.getenv('JOBRT_TEST_WORKER_LOGS') then   -- where to copy the workers' output
      local f = io.open(os.getenv('JOBRT_TEST_WORKER_LOGS'), 'a')
      if f then f:write(out or '', err or ''); f:close() end
    end
    if code ~= 0 then bad[#bad + 1] = ('exit %s: %s%s'):format(tostring(code), out or '', err or '') end
  end
  if self.q then self.q:close() end
  os.execute("rm -rf '" .. self.dir .. "'")
  if #bad > 0 then error('a worker did not stop cleanly: ' .. table.concat(bad, ' | '), 2) end
end

return M
