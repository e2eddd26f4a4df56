-- tests/chaos/flows.lua: flows in the `make chaos` mix (issue 14): trees of jobs whose parents
-- (queue chaos_flow) run after their children (chaos_q and chaos_del, the mix's own handlers),
-- enqueued while the faults hit, so that the news between queues (lua-server-scripts/README.md
-- "Flows") live through killed workers, frozen workers and Redis restarts.
--
--   local flows = require 'tests.chaos.flows'
--   local F = flows.start(client, say, seed, jobs, by_queue)   -- the queue type of chaos_flow
--   F:producer(wg, g)          -- while F.producing: a flow about every 1.5 s, drawn from g
--   F:busy(client) -> n        -- jobs of chaos_flow waiting or running, and parents of every
--                              -- queue waiting for their children (the drain waits for them)
--   F:check(L, t0) -> trouble, info (t0: the soak's start, for +Ns in messages)
-- Every job of an acknowledged flow joins `jobs` (so the lost, duplicate and overlap checks see
-- it): leaves as ok, flaky or doom jobs, parents as `parent` (must end ok in the ledger) or
-- `parent_fails` (a child without ignoreFailure must fail: the parent must end failed in Redis,
-- and never run). A flow whose enqueueFlow was cut off after its root was written (Redis went
-- away meanwhile) counts as acknowledged: the workers of chaos_flow must finish creating it.
-- The checks (tests/chaos/jobs/chaos.lua's `parent` writes what it saw in job.children):
--   * a parent ran only after every child had ended (a run of it that ended, in the ledger);
--   * what it saw is each child's outcome: successful with the child's result (args.k) for ok,
--     flaky and parent children, failed for a doom child with ignoreFailure;
--   * a parent_fails job never ran.
-- The key audit (tests/chaos/ledger.lua) wants no flow bookkeeping left after the drain but the
-- finished parents' children hashes, which expire with their records.
local jobrt = require 'jobrt'

local fmt = string.format

local _M = { QUEUE = 'chaos_flow', LEAF_QUEUES = { { 'chaos_q', 'QUEUE' }, { 'chaos_del', 'DELQUEUE' } } }
local F = {}
F.__index = F

local INTERRUPTED = 'was enqueued, but creating the jobs below it was interrupted'

function _M.start(client, say, seed, jobs, by_queue)
  local self = setmetatable({ client = client, say = say, seed = seed, jobs = jobs, by_queue = by_queue,
                              producing = true, flows = {}, n = 0, acked = 0, refused = 0, interrupted = 0,
                              nodes = 0 }, F)
  local deadline = jobrt.monotime() + 60
  while not pcall(client.queueType, client, _M.QUEUE, 'QUEUE') do
    if jobrt.monotime() > deadline then error('chaos flows: cannot set the type of ' .. _M.QUEUE, 0) end
    jobrt.sleep(0.5)
  end
  say('flows mix: parents in %s after children in chaos_q and chaos_del, about one flow per 1.5 s', _M.QUEUE)
  return self
end

-- One flow drawn from g: the node tree for enqueueFlow, and a flat list of its nodes with what
-- each must end as ({ node=, fn=, kids = {nodes}, ignore= }).
function F:draw(g, n)
  local all = {}
  local prefix = fmt('f%d-%d', self.seed, n)
  local function leaf(path)
    local r = g:next()
    local kind = r < 0.7 and 'ok' or r < 0.85 and 'flaky' or 'doom'
    local lq = _M.LEAF_QUEUES[g:int(1, 2)]
    local id = prefix .. '-' .. path
    local args = { k = id, segs = { g:uniform(0.005, 0.2) } }
    local opts = { id = id }
    if lq[2] == 'DELQUEUE' then
      args.due = math.floor((jobrt.now() + g:uniform(0, 2)) * 1000 + 0.5) / 1000
      opts.timestamp = args.due
    end
    local node = { queue = lq[1], job = kind, args = args, opts = opts }
    local item = { node = node, fn = kind, kids = {} }
    if kind == 'doom' and g:chance(0.5) then node.ignoreFailure = true; item.ignore = true end
    all[#all + 1] = item
    return item
  end
  local function parent(path, depth)
    local id = prefix .. '-' .. path
    local node = { queue = _M.QUEUE, job = 'parent', args = { k = id }, opts = { id = id }, children = {} }
    local item = { node = node, kids = {} }
    all[#all + 1] = item
    for i = 1, g:int(1, 4) do
      local child = (depth < 2 and g:chance(0.2)) and parent(path .. '.' .. i, depth + 1) or leaf(path .. '.' .. i)
      node.children[i] = child.node
      item.kids[i] = child
    end
    -- it fails when a child that fails has no ignoreFailure
    item.fn = 'parent'
    for _, c in ipairs(item.kids) do
      if (c.fn == 'doom' or c.fn == 'parent_fails') and not c.ignore then item.fn = 'parent_fails' end
    end
    return item
  end
  local root = parent('r', 1)
  return root, all
end

function F:acknowledge(root, all, when)
  self.acked = self.acked + 1
  self.flows[#self.flows + 1] = root
  for _, it in ipairs(all) do
    local key = it.node.queue .. '\t' .. it.node.opts.id
    if not self.jobs[key] then
      self.jobs[key] = { q = it.node.queue, id = it.node.opts.id, fn = it.fn, acks = 1, t = when }
      self.by_queue[it.node.queue] = (self.by_queue[it.node.queue] or 0) + 1
      self.nodes = self.nodes + 1
    end
  end
end

function F:producer(wg, g)
  wg:spawn(function()
    while self.producing do
      self.n = self.n + 1
      local root, all = self:draw(g, self.n)
      local t = jobrt.now()
      local ok, err = pcall(self.client.enqueueFlow, self.client, root.node)
      if ok then
        self:acknowledge(root, all, t)
      elseif tostring(err):find(INTERRUPTED, 1, true) then
        -- the root is written: the workers of chaos_flow finish what was cut off
        self.interrupted = self.interrupted + 1
        self:acknowledge(root, all, t)
      else
        self.refused = self.refused + 1
        self.last_refusal = tostring(err)
      end
      jobrt.sleep(-math.log(1 - g:next()) * 1.5)
    end
  end)
end

function F:busy(client)
  local n = 0
  local ok, s = pcall(client.stats, client, _M.QUEUE)
  if not ok then return 1 end
  n = n + (s.pending or 0) + (s.delayed or 0) + (s.executing or 0) + (s.waiting_children or 0)
  for _, lq in ipairs(_M.LEAF_QUEUES) do
    local ok2, s2 = pcall(client.stats, client, lq[1])
    if not ok2 then return n + 1 end
    n = n + (s2.waiting_children or 0)
  end
  return n
end

function F:check(L, t0)
  local trouble = {}
  local ran, checked = 0, 0
  local function runs_of(node) return L.by_job[node.queue .. '\t' .. node.opts.id] or {} end
  local function visit(item)
    for _, c in ipairs(item.kids) do visit(c) end
    if item.fn == 'parent_fails' then
      for _, run in ipairs(runs_of(item.node)) do
        if run.start then
          trouble[#trouble + 1] = fmt('flows: %s/%s ran at +%.1fs although a child of it failed (it must fail, never run)',
            item.node.queue, item.node.opts.id, run.start - (t0 or run.start))
          break
        end
      end
      return
    end
    if item.fn ~= 'parent' then return end
    for _, run in ipairs(runs_of(item.node)) do
      local start_rec = run.writes[1]
      if run.start and start_rec and start_rec.ev == 'start' then
        ran = ran + 1
        local seen = {}
        for _, s in ipairs(start_rec.kids or {}) do seen[s.q .. '\t' .. tostring(s.id)] = s end
        for _, c in ipairs(item.kids) do
          checked = checked + 1
          local what = fmt('flows: %s/%s (run %s from +%.2fs), child %s/%s (%s)', item.node.queue, item.node.opts.id,
            run.rid, run.start - (t0 or run.start), c.node.queue, c.node.opts.id, c.fn)
          local s = seen[c.node.queue .. '\t' .. c.node.opts.id]
          -- the child had ended before the parent started
          local ended_before = false
          for _, cr in ipairs(runs_of(c.node)) do
            if cr.ended and cr.ended <= run.start then ended_before = true end
          end
          if not ended_before then
            trouble[#trouble + 1] = what .. ': the parent started before any run of the child had ended'
          end
          if not s then
            trouble[#trouble + 1] = what .. ': missing from job.children'
          elseif c.fn == 'doom' then
            if s.s ~= 'failed' then trouble[#trouble + 1] = what .. ': job.children says ' .. tostring(s.s) .. ', not failed' end
          elseif s.s ~= 'successful' or s.k ~= c.node.opts.id then
            trouble[#trouble + 1] = fmt('%s: job.children says %s with result %s, not successful with %s', what,
              tostring(s.s), tostring(s.k), c.node.opts.id)
          end
        end
      end
    end
  end
  for _, root in ipairs(self.flows) do visit(root) end
  if self.acked == 0 then trouble[#trouble + 1] = 'flows: no flow was enqueued at all' end
  return trouble, { flows = self.acked, flow_jobs = self.nodes, flows_interrupted = self.interrupted,
                    flows_refused = self.refused, parent_runs_checked = ran, children_checked = checked }
end

return _M
