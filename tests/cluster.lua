-- tests/cluster.lua: a Redis Cluster on loopback for the specs (make test-cluster) and make bench.
--
--   local cluster = require 'tests.cluster'
--   local cl = cluster.start{ primaries = 3, replicas = 1, node_timeout = 1000 }
--       redis-server --cluster-enabled yes on free ports (h.start_redis), then
--       redis-cli --cluster create ... --cluster-replicas N --cluster-yes, then waits until every
--       node says cluster_state:ok, agrees on the map, and every replica is in sync.
--   cl.url          redis://127.0.0.1:P (the first node: a plain address, found to be a cluster)
--   cl.cluster_url  redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
--   cl.servers      the servers (h.start_redis objects: s.port, s:kill(), s:restart())
--   cl:node(port)   a connection to that one node (cluster = false), closed by the caller
--   cl:ports()      the ports of the live nodes
--   cl:primary_of(slot) -> server;  cl:replica_of(server) -> a replica of that primary
--   cl:failover(replica[, "FORCE"])  CLUSTER FAILOVER on it; returns once it is a primary that
--                   every live node knows as such
--   cl:wait_primary(s)  until every live node sees s as a primary serving slots (a replica
--                   promoted after its primary was killed)
--   cl:wait_ok([timeout])  every live node says cluster_state:ok and agrees on the map
--   cl:move_slot(slot, to_server[, batch])  migrates a slot: IMPORTING on the target,
--                   MIGRATING on the source, MIGRATE of every key (batch keys per call), then
--                   SETSLOT NODE on every primary (the procedure of redis-cli --cluster reshard)
--   cl:stop()
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local h = require 'tests.helpers'

local M = {}
local C = {}
C.__index = C

local function node_conn(port)
  local r, err = redis.connect{ host = '127.0.0.1', port = port, cluster = false, timeout = 5 }
  if not r then error(('tests: cannot connect to cluster node %d: %s'):format(port, tostring(err)), 3) end
  return r
end

function C:node(port) return node_conn(port) end

-- The ports of the live nodes.
function C:ports()
  local out = {}
  for _, s in ipairs(self.servers) do
    if s.proc and not s.proc:exited() then out[#out + 1] = s.port end
  end
  return out
end

-- The server object on port.
function C:server(port)
  for _, s in ipairs(self.servers) do if s.port == port then return s end end
end

local function alive(s) return s.proc and not s.proc:exited() end

-- What node `port` says: { id=, role=, primary_of = {slots...} } via CLUSTER NODES.
local function nodes_view(port)
  local r = redis.connect{ host = '127.0.0.1', port = port, cluster = false, timeout = 2, connect_timeout = 2 }
  if not r then return nil end
  local text = r:call('CLUSTER', 'NODES')
  r:close()
  if type(text) ~= 'string' then return nil end
  local view = {}
  for line in text:gmatch('[^\n]+') do
    local f = {}
    for w in line:gmatch('%S+') do f[#f + 1] = w end
    local id, addr, flags, master = f[1], f[2], f[3], f[4]
    local p = tonumber(addr:match(':(%d+)@'))
    local slots = {}
    for i = 9, #f do if f[i]:match('^%d') then slots[#slots + 1] = f[i] end end
    view[p] = { id = id, flags = flags, master = master, slots = table.concat(slots, ' '),
                primary = flags:find('master', 1, true) ~= nil and not flags:find('fail', 1, true) }
  end
  return view
end

-- Waits until every live node says cluster_state:ok and all report the same primaries.
function C:wait_ok(timeout)
  h.wait_for(function()
    local want
    for _, s in ipairs(self.servers) do
      if alive(s) then
        local r = redis.connect{ host = '127.0.0.1', port = s.port, cluster = false, timeout = 2, connect_timeout = 2 }
        if not r then return false end
        local info = r:call('CLUSTER', 'INFO')
        r:close()
        if type(info) ~= 'string' or not info:find('cluster_state:ok', 1, true) then return false end
        local view = nodes_view(s.port)
        if not view then return false end
        local prim = {}
        for p, v in pairs(view) do
          if v.primary and v.slots ~= '' then prim[#prim + 1] = p .. '=' .. v.slots end
        end
        table.sort(prim)
        local key = table.concat(prim, ';')
        if want and key ~= want then return false end
        want = key
      end
    end
    return true
  end, timeout or 30, 'the cluster to be ok and agree on its map')
end

-- Waits until every replica of a live primary is in sync with it.
function C:wait_replicas(timeout)
  h.wait_for(function()
    for _, s in ipairs(self.servers) do
      if alive(s) then
        local r = redis.connect{ host = '127.0.0.1', port = s.port, cluster = false, timeout = 2, connect_timeout = 2 }
        if not r then return false end
        local info = r:call('INFO', 'replication')
        r:close()
        if type(info) ~= 'string' then return false end
        if info:find('role:slave', 1, true) and not info:find('master_link_status:up', 1, true) then return false end
      end
    end
    return true
  end, timeout or 30, 'the replicas to sync')
end

function M.start(opts)
  opts = opts or {}
  local np, nr = opts.primaries or 3, opts.replicas or 1
  local cl = setmetatable({ servers = {} }, C)
  local args = { '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
                 '--cluster-node-timeout', tostring(opts.node_timeout or 1000),
                 '--repl-diskless-sync-delay', '0', '--appendonly', 'no' }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  for i = 1, np * (1 + nr) do
    -- the cluster bus listens on port + 10000
    local s
    for _ = 1, 20 do
      local port = math.random(20000, 55000)
      if port ~= 6379 and port + 10000 ~= 6379 then
        local ok, res = pcall(h.start_redis, { args = args, port = port })
        if ok then s = res; break end
      end
    end
    if not s then error('tests: could not start cluster node ' .. i) end
    cl.servers[i] = s
  end
  local argv = { 'redis-cli', '--cluster', 'create' }
  for _, s in ipairs(cl.servers) do argv[#argv + 1] = '127.0.0.1:' .. s.port end
  for _, a in ipairs({ '--cluster-replicas', tostring(nr), '--cluster-yes' }) do argv[#argv + 1] = a end
  local res, err = jobrt.exec(argv, { timeout = 60 })
  if not res or res.code ~= 0 then
    cl:stop()
    error('tests: redis-cli --cluster create failed: ' .. tostring(err or (res.stdout .. res.stderr)))
  end
  cl:wait_ok(60)
  cl:wait_replicas(60)
  local hs = {}
  for i, s in ipairs(cl.servers) do hs[i] = '127.0.0.1:' .. s.port end
  cl.url = 'redis://127.0.0.1:' .. cl.servers[1].port
  cl.cluster_url = 'redis+cluster://' .. table.concat(hs, ',')
  return cl
end

-- The server that serves slot (as a live node sees it).
function C:primary_of(slot)
  for _, s in ipairs(self.servers) do
    if alive(s) then
      local r = redis.connect{ host = '127.0.0.1', port = s.port, cluster = false, timeout = 2 }
      if r then
        local v = r:call('CLUSTER', 'SLOTS')
        r:close()
        if type(v) == 'table' then
          for _, e in ipairs(v) do
            if slot >= e[1] and slot <= e[2] then return self:server(tonumber(e[3][2])) end
          end
        end
      end
    end
  end
end

-- A replica of primary server p (a live one).
function C:replica_of(p)
  local view = nodes_view(p.port)
  local id = view[p.port].id
  for port, v in pairs(view) do
    if v.master == id and v.flags:find('slave', 1, true) then
      local s = self:server(port)
      if s and alive(s) then return s end
    end
  end
end

-- The id of the node on port.
function C:id_of(port)
  local r = node_conn(port)
  local id = r:call('CLUSTER', 'MYID')
  r:close()
  return id
end

-- CLUSTER FAILOVER [FORCE] on replica s; waits until every live node sees it as a primary.
function C:failover(s, mode)
  local r = node_conn(s.port)
  local ok, err
  if mode then ok, err = r:call('CLUSTER', 'FAILOVER', mode) else ok, err = r:call('CLUSTER', 'FAILOVER') end
  r:close()
  if not ok then error('tests: CLUSTER FAILOVER on ' .. s.port .. ': ' .. tostring(err)) end
  self:wait_primary(s)
end

-- Waits until every live node sees server s as a primary that serves slots, and the cluster is
-- ok (after a kill -9 of its primary: the replica was promoted).
function C:wait_primary(s, timeout)
  h.wait_for(function()
    for _, o in ipairs(self.servers) do
      if alive(o) then
        local view = nodes_view(o.port)
        if not view or not view[s.port] or not view[s.port].primary or view[s.port].slots == '' then return false end
      end
    end
    return true
  end, timeout or 30, 'node ' .. s.port .. ' to be a primary for every node')
  self:wait_ok(timeout or 30)
end

-- Moves slot to server `to` as redis-cli --cluster reshard does (redis.io "Live resharding"):
-- SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE the keys in batches,
-- SETSLOT NODE on the target, the source and the other primaries. opts.batch keys per MIGRATE
-- (default 10, redis-cli's default pipeline), opts.pause seconds between batches (so that
-- calls meet the slot half-moved). Returns the number of keys moved.
function C:move_slot(slot, to, opts)
  opts = opts or {}
  local from = self:primary_of(slot)
  if from == to then return 0 end
  local src, dst = node_conn(from.port), node_conn(to.port)
  local src_id, dst_id = src:call('CLUSTER', 'MYID'), dst:call('CLUSTER', 'MYID')
  assert(dst:call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src_id))
  assert(src:call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst_id))
  local moved = 0
  while true do
    local keys = assert(src:call('CLUSTER', 'GETKEYSINSLOT', slot, opts.batch or 10))
    if #keys == 0 then break end
    local argv = { 'MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS' }
    for _, k in ipairs(keys) do argv[#argv + 1] = k end
    local ok, err = src:call(unpack(argv))
    if not ok then error('tests: MIGRATE: ' .. tostring(err)) end
    moved = moved + #keys
    if opts.pause then jobrt.sleep(opts.pause) end
  end
  assert(dst:call('CLUSTER', 'SETSLOT', slot, 'NODE', dst_id))
  assert(src:call('CLUSTER', 'SETSLOT', slot, 'NODE', dst_id))
  src:close()
  dst:close()
  for _, s in ipairs(self.servers) do
    if alive(s) and s ~= from and s ~= to then
      local r = node_conn(s.port)
      local role = r:call('ROLE')
      if type(role) == 'table' and role[1] == 'master' then r:call('CLUSTER', 'SETSLOT', slot, 'NODE', dst_id) end
      r:close()
    end
  end
  self:wait_ok(30)
  return moved
end

function C:stop()
  for _, s in ipairs(self.servers) do s:stop() end
end

return M
