-- bench/cluster.lua: Redis Cluster figures, each beside its baseline measured in the same run.
--   * jobs/s: N no-op jobs in 3 queues, served by one worker process (concurrency 50), the 3
--     queues on 3 primaries of a cluster (no replicas) against the same 3 queues on one
--     redis-server (the bench's own). On a 2-core machine the worker and three redis-servers
--     share two cores: the gain a cluster gives (Redis work spread over processes, and over
--     machines in production) mostly cannot show here.
--   * pub/sub: what the wake-up and results channels cost. Classic PUBLISH in a cluster is
--     sent to every node over the cluster bus; sharded SPUBLISH (Redis 7) only to the shard
--     of the channel's slot. Measured on a cluster of 3 primaries and 3 replicas: server CPU
--     (every node's used_cpu_user + used_cpu_sys from INFO cpu) per message for K messages of
--     each kind, and the messages jobrt publishes per job (cmdstat_publish) in two regimes:
--     the jobs enqueued beforehand (queues never empty: few wake-ups), and enqueued one by one
--     by one producer while the worker waits (N/10 jobs, at least 1000: most enqueues wake).
--   ./jobrt run bench/run.lua cluster      (BENCH_CLUSTER_JOBS, default 30000; BENCH_PUBS 30000)
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local cluster_mod = require 'jobrt.cluster'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'
local tcluster = require 'tests.cluster'

local M = {}

-- Three queue names, each in a slot of a different primary of cl (or any three on one node).
local function queue_names(cl)
  if not cl then return { 'CB1', 'CB2', 'CB3' } end
  local prims, seen = {}, {}
  for _, port in ipairs(cl:ports()) do
    local c = cl:node(port)
    if c:call('ROLE')[1] == 'master' then prims[#prims + 1] = cl:server(port) end
    c:close()
  end
  local names = {}
  for i, p in ipairs(prims) do
    for n = 1, 100000 do
      local q = ('CB%d_%d'):format(i, n)
      local s = cl:primary_of(cluster_mod.keyslot('{' .. q .. '}'))
      if s == p and not seen[q] then names[i] = q; seen[q] = true; break end
    end
  end
  return names
end

-- Sum of used_cpu_user + used_cpu_sys over the connections each_node gives, in seconds.
local function cpu_of(each_node)
  local total = 0
  each_node(function(c)
    local info = c:call('INFO', 'cpu')
    total = total + tonumber(info:match('used_cpu_user:([%d%.]+)')) + tonumber(info:match('used_cpu_sys:([%d%.]+)'))
  end)
  return total
end

-- Seconds one worker process takes for n jobs spread over the queues, the publishes Redis
-- counted meanwhile (every node) and the server CPU seconds (every node). paced = false: the
-- jobs are enqueued beforehand (50 producers), so the queues are never empty and wake-ups are
-- rare; paced = true: one producer enqueues them one by one while the worker serves, so the
-- worker is mostly waiting and most enqueues wake it (the regime of a cluster with spare
-- workers).
local function jobs_run(url, names, n, each_node, paced)
  local r = assert(redis.connect(url))
  assert(r:call('FLUSHALL'))
  local o = assert(ops_mod.new(r))
  for _, q in ipairs(names) do assert(o:set_queue_type(q, 'QUEUE')) end
  local function produce(producers)
    local wg = jobrt.waitgroup()
    for c = 1, producers do
      wg:spawn(function()
        for i = c, n, producers do assert(o:enqueue(names[i % #names + 1], 'noop', '{}', {})) end
      end)
    end
    wg:wait()
  end
  local function done()
    local d = 0
    for _, q in ipairs(names) do d = d + o:stats(q).completed end
    return d
  end
  if not paced then produce(50) end
  local dir = h.tmpdir()
  local f = assert(io.open(dir .. '/cb.lua', 'w'))
  local src = { 'return {' }
  for _, q in ipairs(names) do src[#src + 1] = ('  %s = { noop = function() end },'):format(q) end
  src[#src + 1] = '}'
  f:write(table.concat(src, '\n'))
  f:close()
  local base = 0
  each_node(function(c) c:call('CONFIG', 'RESETSTAT') end)
  local cpu0 = cpu_of(each_node)
  local p = h.spawn_jobrt({ 'work', dir, '--redis', url, '--log-level', 'warn', '--concurrency', '50' },
    { capture = false })
  local t0 = jobrt.monotime()
  if paced then
    for _, q in ipairs(names) do assert(o:enqueue(q, 'noop', '{}', {})) end
    base = #names
    h.wait_for(function() return done() >= base end, 60, 'the worker to start serving')
    each_node(function(c) c:call('CONFIG', 'RESETSTAT') end)
    cpu0, t0 = cpu_of(each_node), jobrt.monotime()
    produce(1)
  end
  h.wait_for(function() return done() >= base + n end, 600, 'the cluster bench jobs')
  local secs = jobrt.monotime() - t0
  p:kill('SIGTERM')
  p:wait()
  local pubs = 0
  each_node(function(c)
    local info = c:call('INFO', 'commandstats')
    pubs = pubs + tonumber(info:match('cmdstat_publish:calls=(%d+)') or 0)
  end)
  local cpu = cpu_of(each_node) - cpu0
  os.execute("rm -rf '" .. dir .. "'")
  r:close()
  return secs, pubs, cpu
end

-- Calls fn(conn) for a connection to each live node of cl.
local function each_of(cl)
  return function(fn)
    for _, port in ipairs(cl:ports()) do
      local c = cl:node(port)
      fn(c)
      c:close()
    end
  end
end

-- Sum of used_cpu_user + used_cpu_sys over the live nodes of cl, in seconds.
local function cluster_cpu(cl)
  local total = 0
  for _, port in ipairs(cl:ports()) do
    local c = cl:node(port)
    local info = c:call('INFO', 'cpu')
    c:close()
    total = total + tonumber(info:match('used_cpu_user:([%d%.]+)')) + tonumber(info:match('used_cpu_sys:([%d%.]+)'))
  end
  return total
end

-- Server CPU seconds per message and messages/s for k messages of `cmd` on channel, sent by
-- 50 coroutines over one connection to the primary of the channel's slot.
local function publish_cost(cl, cmd, channel, k)
  local owner = cl:primary_of(cluster_mod.keyslot(channel))
  local c = cl:node(owner.port)
  local cpu0, t0 = cluster_cpu(cl), jobrt.monotime()
  local wg = jobrt.waitgroup()
  for w = 1, 50 do
    wg:spawn(function() for _ = w, k, 50 do assert(c:call(cmd, channel, '1796060051123')) end end)
  end
  wg:wait()
  local secs = jobrt.monotime() - t0
  local cpu = cluster_cpu(cl) - cpu0
  c:close()
  return cpu / k, k / secs
end

function M.run(server, report)
  local n = tonumber(os.getenv('BENCH_CLUSTER_JOBS')) or 30000
  local k = tonumber(os.getenv('BENCH_PUBS')) or 30000

  -- jobs/s: 3 queues on one node, then on 3 primaries
  local single, single_pubs
  local cl = tcluster.start{ primaries = 3, replicas = 0 }
  local ok, err = pcall(function()
    local function one_node(fn)
      local c = assert(redis.connect{ url = server.url, cluster = false })
      fn(c)
      c:close()
    end
    local every_primary = each_of(cl)
    local names = queue_names(cl)
    single, single_pubs = jobs_run(server.url, names, n, one_node)
    local clus, clus_pubs = jobs_run(cl.url, names, n, every_primary)
    report(('jobs/s, %d no-op jobs in 3 queues on 3 primaries'):format(n), n / clus,
      'the same 3 queues on one node', n / single, 'jobs/s')
    report('PUBLISH calls per job (wake-ups + results)', clus_pubs / n, 'the same on one node', single_pubs / n)
  end)
  cl:stop()
  if not ok then error(err, 0) end

  -- pub/sub: classic PUBLISH (to every node) against sharded SPUBLISH (to the shard)
  cl = tcluster.start{ primaries = 3, replicas = 1 }
  ok, err = pcall(function()
    local ch = 'jobrt:{CB}:wake'
    publish_cost(cl, 'PUBLISH', ch, 2000)               -- warm up
    local cpu_p, rate_p = publish_cost(cl, 'PUBLISH', ch, k)
    local cpu_s, rate_s = publish_cost(cl, 'SPUBLISH', ch, k)
    report('server CPU per PUBLISH, all 6 nodes (us)', cpu_p * 1e6, 'per SPUBLISH (its shard)', cpu_s * 1e6, 'us')
    report('PUBLISH/s, one connection, 50 in flight', rate_p, 'SPUBLISH/s', rate_s, 'msg/s')
    -- what the broadcast costs jobrt: its publishes per job times the extra CPU of each
    local names = queue_names(cl)
    local secs, pubs, cpu = jobs_run(cl.url, names, n, each_of(cl))
    report('jobs/s, the same on 3 primaries + 3 replicas', n / secs, 'the same 3 queues on one node', n / single, 'jobs/s')
    local extra = pubs / n * (cpu_p - cpu_s)
    report('broadcast CPU per job (us, derived)', extra * 1e6, 'all Redis CPU per job (us)', cpu / n * 1e6, 'us')
    -- the same with spare workers: the queues are mostly empty, so most enqueues wake them
    local m = math.max(1000, math.floor(n / 10))
    local psecs, ppubs, pcpu = jobs_run(cl.url, names, m, each_of(cl), true)
    report(('PUBLISH calls per job, %d enqueued one by one'):format(m), ppubs / m,
      'enqueued beforehand (above)', pubs / n)
    report('broadcast CPU per job then (us, derived)', ppubs / m * (cpu_p - cpu_s) * 1e6,
      'all Redis CPU per job (us)', pcpu / m * 1e6, 'us')
  end)
  cl:stop()
  if not ok then error(err, 0) end
end

return M
