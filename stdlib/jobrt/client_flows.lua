-- jobrt.client_flows: the client's flow calls (added to the client of jobrt.client; same two
-- calling forms: a trailing callback(err, value...) returns at once, without one the call
-- yields and returns the values or raises). Flows: lua-server-scripts/README.md "Flows" (the
-- protocol) and README.md "Flows" (how to use them).
--
--   q:enqueueFlow(node) -> id, tree
--       node = { queue = 'Q', job = 'name', args = {...}, opts = {...},
--                children = { node, ... }, ignoreFailure = true|nil }
--       -- enqueues a tree of jobs: a parent runs once all its children have finished, and
--       -- reads their results in job.children. Children may live in other queues (QUEUE or
--       -- DELQUEUE: an LBQUEUE merges identical jobs, so it takes no flows). opts: id,
--       -- priority, timestamp, delay (a parent's delay counts from when its children are
--       -- done), retries, timeout. A child that fails for good fails its parent, unless the
--       -- child has ignoreFailure: then the parent runs and sees the failure. Every node is
--       -- checked before anything is written (the message names it: "children[2].children[1]:
--       -- ..."); ids not given are generated in each queue. id: the root's id; tree: { queue=,
--       -- id=, existed= (root only: its id was already waiting or running: nothing was
--       -- enqueued), children = { tree... } }.
--   q:getFlow(queue, id) -> { job = record, parent = {queue=, id=, state=} | nil,
--                             children = { {queue=, id=, state=, result=, error=}... } | nil } | nil
--       -- a job's record with its place in a flow: state of a child is its parent's view
--       -- (successful, failed, deleted) once it has finished, else its own (pending,
--       -- executing; gone when its record went); nil: no such job
--   q:getFlowTree(queue, id[, max_nodes]) -> node | nil
--       -- the whole flow the job belongs to, from its root: node = { queue=, id=, job=, state=,
--       -- result=, error=, children = { node... }, more = n (children left out past
--       -- max_nodes, default 1000) }
-- Flows are carried between queues by jobrt.flows (the client carries what its calls wrote;
-- the workers of each queue carry the rest).
local jobrt = require 'jobrt'
local flows = require 'jobrt.flows'
local ops = require 'jobrt.ops'
local json = require 'jobrt.json'

local type, pairs, ipairs, next, tostring, pcall, error = type, pairs, ipairs, next, tostring, pcall, error
local str_format, floor = string.format, math.floor

local _M = {}

local MAX_DEPTH, MAX_NODES, MAX_CHILDREN = 32, 100000, 10000
local NODE_KEYS = { queue = true, job = true, args = true, opts = true, children = true, ignoreFailure = true }
local NULL = json.null

function _M.install(Client, I)
  local both_ways, split_callback, take, argfail = I.both_ways, I.split_callback, I.take, I.argfail
  local check_self, check_job, encode_args, check = I.check_self, I.check_job, I.encode_args, I.check
  local tname, shown = I.tname, I.shown
  local M = I.module

  -- ---- enqueueFlow ----------------------------------------------------------------------

  -- Checks node (at path `where`) and its subtree; returns the checked tree (queue, job,
  -- args_json, opts, children, ignoreFailure, where). count: { n = nodes so far }.
  local function check_node(self, node, where, depth, count)
    local pre = where == '' and '' or (where .. ': ')
    local function fail(msg) error('enqueueFlow: ' .. pre .. msg, 0) end
    if type(node) ~= 'table' or (next(node) ~= nil and #node > 0) then
      fail('must be a table {queue=, job=, args=, opts=, children=}, got ' .. (type(node) == 'table' and 'an array' or tname(node)))
    end
    for k in pairs(node) do
      if not NODE_KEYS[k] then
        fail(str_format('unknown field %s (known: queue, job, args, opts, children, ignoreFailure)', shown(k)))
      end
    end
    if depth > MAX_DEPTH then fail(str_format('a flow may be at most %d levels deep', MAX_DEPTH)) end
    count.n = count.n + 1
    if count.n > MAX_NODES then error(str_format('enqueueFlow: a flow may have at most %d jobs', MAX_NODES), 0) end
    local q = node.queue
    if type(q) ~= 'string' or q == '' then fail('queue must be a non-empty string, got ' .. (q == '' and "''" or tname(q))) end
    local qerr = require('jobrt.names').queue(q)
    if qerr then fail('the queue name ' .. qerr) end
    check_job('enqueueFlow', node.job, pre)
    local out = { queue = q, job = node.job, args_json = encode_args(self, 'enqueueFlow', node.args, pre), where = where }
    if type(node.opts) == 'table' and next(node.opts) ~= nil and #node.opts > 0 then
      fail('opts must be a table of named options {id=, priority=, delay=, ...}, got an array')
    end
    local o = M.check_options('enqueueFlow', node.opts, nil, pre)
    if o.jobHash then
      fail("option 'jobHash' does not apply to a job of a flow: it is its own job, never merged with another")
    end
    out.opts = o
    out.id = o.id
    if node.ignoreFailure ~= nil and type(node.ignoreFailure) ~= 'boolean' then
      fail('ignoreFailure must be true or false, got ' .. tname(node.ignoreFailure))
    end
    if node.ignoreFailure and depth == 1 then
      fail('ignoreFailure applies to a child (its parent then runs despite its failure); this is the root')
    end
    out.ignoreFailure = node.ignoreFailure == true
    local kids = node.children
    out.children = {}
    if kids ~= nil then
      if type(kids) ~= 'table' then fail('children must be an array of nodes, got ' .. tname(kids)) end
      local n = #kids
      for k in pairs(kids) do
        if type(k) ~= 'number' or k < 1 or k > n or k ~= floor(k) then
          fail('children must be an array of nodes (keys 1..n), got the key ' .. shown(k))
        end
      end
      if n > MAX_CHILDREN then fail(str_format('a parent may have at most %d children, got %d', MAX_CHILDREN, n)) end
      for i = 1, n do
        out.children[i] = check_node(self, kids[i], where .. (where == '' and '' or '.') .. 'children[' .. i .. ']', depth + 1, count)
      end
    end
    return out
  end

  local function each_node(t, fn)
    fn(t)
    for _, c in ipairs(t.children) do each_node(c, fn) end
  end

  -- Raises when a client id is given to two jobs of one queue in a checked flow.
  local function check_unique_ids(root)
    local seen = {}
    each_node(root, function(t)
      if t.id then
        local ref = t.queue .. '|' .. t.id
        if seen[ref] then
          error(str_format("enqueueFlow: %s: job id '%s' of queue '%s' is given twice in the flow (%s): each job once",
            t.where == '' and 'the root' or t.where, t.id, t.queue, seen[ref] == '' and 'the root' or seen[ref]), 0)
        end
        seen[ref] = t.where
      end
    end)
  end

  local function tree_of(t)
    local kids = {}
    for i, c in ipairs(t.children) do kids[i] = tree_of(c) end
    return { queue = t.queue, id = t.id, children = kids }
  end

  local function flow_perform(self, root)
    local o = self.ops
    -- every queue's type: QUEUE or DELQUEUE, and the options must fit it
    local nodes = {}
    each_node(root, function(t) nodes[#nodes + 1] = t end)
    local tok, terr = M.check_flow_types(o, root)
    if not tok then error(terr, 0) end
    -- a root id already waiting or running: nothing is enqueued (as enqueueJob)
    if root.id then
      local st = check(self.r:call('HGET', ops.keys(root.queue)[1] .. root.id, 'state'))
      if st == 'pending' or st == 'executing' then
        local tree = tree_of(root)
        tree.existed = true
        return root.id, tree
      end
    end
    -- client ids: each once in the flow, and no child id already waiting or running
    check_unique_ids(root)
    for _, t in ipairs(nodes) do
      if t.id and t ~= root then
        local st = check(self.r:call('HGET', ops.keys(t.queue)[1] .. t.id, 'state'))
        if st == 'pending' or st == 'executing' then
          error(str_format("enqueueFlow: %s: job id '%s' is already %s in queue '%s': give the child another id",
            t.where, t.id, st, t.queue), 0)
        end
      end
    end
    -- generated ids: a block of each queue's sequence (INCRBY jobrt:{Q}:seq n)
    local want, order = {}, {}
    for _, t in ipairs(nodes) do
      if not t.id then
        if not want[t.queue] then want[t.queue] = {}; order[#order + 1] = t.queue end
        local w = want[t.queue]
        w[#w + 1] = t
      end
    end
    for _, q in ipairs(order) do
      local list = want[q]
      local top = check(self.r:call('INCRBY', ops.keys(q)[12], #list))
      for i, t in ipairs(list) do t.id = tostring(floor(top - #list + i)) end
    end
    -- the root, then every level below it, carried over queue by queue (jobrt.flows)
    local fid = flows.new_flow_id()
    local statuses, err = o:flow_deliver(root.queue, { flows.root_entry(root, fid) })
    if not statuses then error('enqueueFlow: ' .. tostring(err), 0) end
    local st = statuses[1]
    local tree = tree_of(root)
    if st == 'existed' then
      tree.existed = true
      return root.id, tree
    end
    if st ~= 'created' then error('enqueueFlow: ' .. tostring(st):gsub('^conflict: ', ''), 0) end
    local okc, cerr = flows.carry(o, root.queue, { fresh = true })
    if not okc then
      error(str_format("enqueueFlow: job %s of queue '%s' was enqueued, but creating the jobs below it was interrupted (%s): the workers of queue '%s' finish it",
        root.id, root.queue, tostring(cerr), root.queue), 0)
    end
    return root.id, tree
  end

  -- For the command line: checks a flow (the node table) before connecting; raises like
  -- enqueueFlow does.
  -- check_flow(node [, max_payload]): the CLI's check before it connects (max_payload: bytes
  -- of each node's args as JSON text, default 16 MiB)
  function M.check_flow(node, max_payload)
    local holder = { args_out = { max_bytes = max_payload or json.MAX_PAYLOAD, sort = true, name = 'args' } }
    local root = check_node(holder, node, '', 1, { n = 0 })
    check_unique_ids(root)
    return root
  end

  -- check_flow_types(ops, checked) -> true | nil, message, status: each queue of a checked flow
  -- (check_flow) must have a type that takes a job of a flow (QUEUE, DELQUEUE) and the options
  -- its type allows. status 1: a queue has no type (or Redis failed: the state of the server);
  -- 2: the flow does not fit the types (a usage error, as for jobrt enqueue).
  function M.check_flow_types(o, root)
    local types = {}
    local bad
    each_node(root, function(t)
      if bad then return end
      local pre = t.where == '' and '' or (t.where .. ': ')
      local qt = types[t.queue]
      if not qt then
        local err
        qt, err = o:queue_type(t.queue)
        if not qt then bad = { 'enqueueFlow: ' .. pre .. tostring(err), 1 }; return end
        types[t.queue] = qt
      end
      if qt == 'LBQUEUE' then
        bad = { str_format("enqueueFlow: %squeue '%s' is an LBQUEUE: it merges identical jobs into one entry, so a job of a flow (which reports to one parent) cannot live there; use a QUEUE or DELQUEUE",
          pre, t.queue), 2 }
        return
      end
      local msg = M.type_rules('enqueueFlow', t.queue, qt, t.opts, pre)
      if msg then bad = { msg, 2 } end
    end)
    if bad then return nil, bad[1], bad[2] end
    return true
  end

  function Client:enqueueFlow(...)
    check_self(self, 'enqueueFlow')
    local cb, n = split_callback(...)
    if n ~= 1 then argfail('enqueueFlow', 'expected (node[, callback]), got ' .. n .. ' arguments') end
    local node = take(n, ...)
    local root = check_node(self, node, '', 1, { n = 0 })
    return both_ways('enqueueFlow', cb, flow_perform, self, root)
  end

  -- ---- reading flows --------------------------------------------------------------------

  -- the live state of job id of queue: record state, result (nil: gone)
  local function live(self, queue, id)
    local f = check(self.r:call('HMGET', ops.keys(queue)[1] .. id, 'state', 'result', 'cancelled', 'function'))
    if f[1] == NULL or f[3] ~= NULL then return nil end
    return f[1], f[2] ~= NULL and f[2] or nil, f[4] ~= NULL and f[4] or nil
  end

  -- children of parent id of queue, with the state shown (the parent's view once finished,
  -- else the job's own), in up to `window` concurrent reads
  local function children_of(self, queue, id)
    local kids = check(flows.children(self.ops, queue, id))
    local wg = jobrt.waitgroup()
    local next_i = 1
    local function reader()
      while next_i <= #kids do
        local c = kids[next_i]
        next_i = next_i + 1
        local ok, st, _, fn = pcall(live, self, c.queue, c.id)
        c.job = ok and fn or nil
        if c.state == 'pending' then c.state = ok and (st or 'gone') or 'unknown' end
      end
    end
    for _ = 1, math.min(50, #kids) do wg:spawn(reader) end
    wg:wait()
    return kids
  end

  local function flow_of(self, queue, id)
    local rec = check(self.ops:get(queue, id))
    if rec == nil then return nil end
    local out = { job = rec }
    if rec['parent-queue'] then
      local pq, pid = rec['parent-queue'], rec['parent-id']
      local ok, st, res = pcall(live, self, pq, pid)
      out.parent = { queue = pq, id = pid, state = ok and (st or 'gone') or 'unknown', result = ok and res or nil }
    end
    if rec.children then out.children = children_of(self, queue, id) end
    return out
  end

  local function check_qid(fname, queue, id)
    I.check_queue(fname, queue)
    if type(id) == 'number' then id = tostring(id) end
    if type(id) ~= 'string' or id == '' then argfail(fname, 'id must be a non-empty string, got ' .. tname(id)) end
    local err = require('jobrt.names').ref(id)
    if err then argfail(fname, 'id ' .. err) end
    return id
  end

  function Client:getFlow(...)
    check_self(self, 'getFlow')
    local cb, n = split_callback(...)
    if n > 2 then argfail('getFlow', 'expected (queue, id[, callback]), got ' .. n .. ' arguments') end
    local queue, id = take(n, ...)
    id = check_qid('getFlow', queue, id)
    return both_ways('getFlow', cb, flow_of, self, queue, id)
  end

  local function tree_perform(self, queue, id, max_nodes)
    local rec = check(self.ops:get(queue, id))
    if rec == nil then return nil end
    -- up to the root (a flow is at most MAX_DEPTH levels deep)
    local q, i = queue, id
    for _ = 1, MAX_DEPTH do
      if not rec['parent-queue'] then break end
      local prec = check(self.ops:get(rec['parent-queue'], rec['parent-id']))
      if not prec or prec.flow ~= rec.flow then break end
      q, i, rec = rec['parent-queue'], rec['parent-id'], prec
    end
    local budget = max_nodes
    local function node(nq, nid, r, state)
      budget = budget - 1
      local t = { queue = nq, id = nid, job = r and r['function'], state = state or (r and r.state) or 'gone',
                  children = {} }
      if r and r.state == 'finished' then
        t.state = r.result or 'finished'
        if r.result == 'successful' then t.result = M.decode_result(r['result-value'])
        elseif r.result == 'failed' then t.error = r['error-reason'] end
      end
      if r and r.children then
        local kids = children_of(self, nq, nid)
        for k, c in ipairs(kids) do
          if budget <= 0 then
            t.more = #kids - k + 1
            break
          end
          local cr = c.state ~= 'gone' and c.state ~= 'deleted' and check(self.ops:get(c.queue, c.id)) or nil
          local ct = node(c.queue, c.id, cr, cr == nil and c.state or nil)
          if c.state == 'successful' or c.state == 'failed' then
            ct.state = c.state
            ct.result, ct.error = c.result, c.error
          end
          t.children[#t.children + 1] = ct
        end
      end
      return t
    end
    return node(q, i, rec)
  end

  function Client:getFlowTree(...)
    check_self(self, 'getFlowTree')
    local cb, n = split_callback(...)
    if n > 3 then argfail('getFlowTree', 'expected (queue, id[, max_nodes][, callback]), got ' .. n .. ' arguments') end
    local queue, id, max_nodes = take(n, ...)
    id = check_qid('getFlowTree', queue, id)
    if max_nodes ~= nil and (type(max_nodes) ~= 'number' or max_nodes < 1 or max_nodes ~= floor(max_nodes)) then
      argfail('getFlowTree', 'max_nodes must be a whole number >= 1, got ' .. shown(max_nodes))
    end
    return both_ways('getFlowTree', cb, tree_perform, self, queue, id, max_nodes or 1000)
  end
end

return _M
