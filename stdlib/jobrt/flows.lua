-- jobrt.flows: carries flow news between queues (lua-server-scripts/README.md "Flows").
--
-- A flow is a tree of jobs: a parent runs after its children, which may live in other queues,
-- so in other Cluster slots. No server script touches two queues: what one queue must tell
-- another (create a child, a child's outcome for its parent, delete a pending child of a
-- deleted parent) waits in the first queue's outbox (jobrt:{Q}:flow:out) until someone carries
-- it over: takes it (flow_take, which holds it for HOLD_MS), applies it to the other queue
-- (flow_deliver, idempotent: news carried twice count once) and acknowledges it (flow_ack).
-- Whoever wrote entries (the worker that completed a child, the client that enqueued a flow or
-- deleted a parent) carries them at once; should it die first, every worker of that queue
-- was told ("flow:<ms>" on the queue's wake channel) and takes them once they are overdue, and
-- every worker takes what is overdue when it starts. So each entry is carried over at least
-- once and applied exactly once in effect.
--
--   local flows = require 'jobrt.flows'
--   flows.carry(o, queue[, opts]) -> true, next_ms | nil, now_ms   or nil, err
--       -- o: a jobrt.ops object. Carries queue's outbox entries and, recursively, those that
--       -- applying them wrote in other queues. opts.fresh: also take what was written in the
--       -- last FRESH_MS (the writer's own entries; default: only overdue ones); opts.log:
--       -- function(level, fmt, ...) for entries that cannot be applied (default jobrt.log).
--       -- next_ms: when queue's outbox next has an entry due (server Unix ms, nil: empty),
--       -- now_ms: the server time it was read at. err: Redis trouble (entries stay; they are
--       -- taken again after HOLD_MS).
--   flows.children(o, queue, id) -> array | nil, err
--       -- the children of parent id, in the order given: { queue=, id=, state= 'pending' |
--       -- 'successful' | 'failed' | 'deleted', result= (decoded result, successful),
--       -- error= (reason, failed), ignoreFailure= bool }; empty for a job that is no parent
--   flows.FRESH_MS, flows.HOLD_MS, flows.TAKE
local json = require 'jobrt.json'
local jobrt = require 'jobrt'

local type, ipairs, pairs, tostring, pcall = type, ipairs, pairs, tostring, pcall
local fmt = string.format

local _M = {}

_M.FRESH_MS = 5000      -- a writer holds its entries this long (includes/flows.lua FLOW_FRESH_MS)
_M.HOLD_MS = 15000      -- whoever takes entries holds them this long
_M.TAKE = 200           -- entries per flow_take

local function default_log(level, f, ...) jobrt.log(level, f, ...) end

-- The queue an outbox entry is for: c:/d: name it in the key, u: news go to the parent's queue
-- (third line of the text).
local function target_of(e)
  local k = e.key:sub(1, 2)
  if k == 'u:' then return (e.text:match('^[^\n]*\n[^\n]*\n([^\n]*)\n')) end
  return (e.key:match('^..([^|]*)|'))
end

-- The news a parent gets when its child's c: entry cannot be applied: the child failed.
local function failed_news(e, reason)
  local cq, cid = e.key:match('^c:([^|]*)|(.*)$')
  local fid, pq, pid = e.text:match('^([^\n]*)\n([^\n]*)\n([^\n]*)\n')
  if not cq or not pq or pq == '' then return nil end
  return pq, { key = 'u:' .. cid, text = fid .. '\n' .. cq .. '\n' .. pq .. '\n' .. pid .. '\n1\nfailed\n' ..
    'could not create job ' .. cq .. '/' .. cid .. ': ' .. tostring(reason) }
end

-- a Redis or connection problem (retry later: ECONN, ETIMEDOUT, LOADING...), rather than an
-- entry the script refuses (its argument errors name it) or a queue without a type
local function transient(err)
  err = tostring(err)
  if err:find('^flow_deliver: ') then return false end
  return not (err:find("^queue '") and err:find(' in RESERVED:QCONFIG', 1, true))
end

-- Applies entries (all for queue target). Returns statuses (nil for an entry refused for good,
-- with its reason in why[i]), written; or nil, err on Redis trouble.
local function apply(o, target, entries)
  local statuses, written = o:flow_deliver(target, entries)
  if statuses then return statuses, written, {} end
  if transient(written) then return nil, written end
  -- refused: find which entries by applying them one at a time
  local why = {}
  statuses, written = {}, 0
  for i, e in ipairs(entries) do
    local st, w = o:flow_deliver(target, { e })
    if st then
      statuses[i] = st[1]
      written = written + w
    elseif transient(w) then
      return nil, w
    else
      why[i] = w
    end
  end
  return statuses, written, why
end

function _M.carry(o, queue, opts)
  opts = opts or {}
  local log = opts.log or default_log
  local work = { { queue, opts.fresh and _M.FRESH_MS or 0 } }
  local first_next, first_now
  local steps = 0
  while #work > 0 do
    local q, horizon = work[1][1], work[1][2]
    table.remove(work, 1)
    while true do
      steps = steps + 1
      local t, err = o:flow_take(q, _M.TAKE, horizon, _M.HOLD_MS)
      if not t then
        if q == queue then return nil, err end
        log('warn', 'flows: cannot take the outbox of queue %s: %s (its workers take it later)', q, tostring(err))
        break
      end
      if q == queue then first_next, first_now = t.next, t.now end
      local entries = t.entries
      if #entries == 0 then break end
      local groups, order = {}, {}
      for _, e in ipairs(entries) do
        local target = target_of(e) or ''
        if not groups[target] then
          groups[target] = {}
          order[#order + 1] = target
        end
        local g = groups[target]
        g[#g + 1] = e
      end
      local acks, back = {}, {}         -- back: news of children that could not be created
      local trouble
      for _, target in ipairs(order) do
        local list = groups[target]
        local qt, terr = o:queue_type(target)
        local statuses, written, why
        if not qt and transient(terr) then
          trouble = terr
        elseif not qt then
          statuses, why = {}, {}
          for i = 1, #list do why[i] = terr end
          written = 0
        else
          statuses, written, why = apply(o, target, list)
          if not statuses then trouble = written end
        end
        if statuses then
          for i, e in ipairs(list) do
            local st = statuses[i]
            local reason = why[i] or (type(st) == 'string' and st:match('^conflict: (.*)$'))
            if reason and e.key:sub(1, 2) == 'c:' then
              local pq, news = failed_news(e, reason)
              if pq then back[#back + 1] = news end
              log('warn', 'flows: job %s could not be created: %s (its parent fails)', e.key:sub(3), tostring(reason))
            elseif why[i] then
              log('error', 'flows: dropped outbox entry %s of queue %s: %s', e.key, q, tostring(why[i]))
            end
            acks[#acks + 1] = { key = e.key, stamp = e.stamp }
          end
          if written > 0 then work[#work + 1] = { target, _M.FRESH_MS } end
        end
      end
      if #back > 0 then
        -- c: entries live in the parent's queue: that is q
        local st, w = apply(o, q, back)
        if not st then
          trouble = trouble or w
          acks = {}
        elseif w > 0 then
          work[#work + 1] = { q, _M.FRESH_MS }
        end
      end
      if #acks > 0 then
        local n, aerr = o:flow_ack(q, acks)
        if not n then trouble = trouble or aerr end
      end
      if trouble then
        if q == queue then return nil, trouble end
        log('warn', 'flows: cannot carry over the outbox of queue %s: %s (its workers take it later)', q, tostring(trouble))
        break
      end
      if #entries < _M.TAKE then break end
      if steps > 100000 then break end    -- cannot happen: every entry is finite work
    end
  end
  return true, first_next, first_now
end

function _M.children(o, queue, id)
  local list, err = o:children(queue, id)
  if not list then return nil, err end
  local out = {}
  for i, c in ipairs(list) do
    local item = { queue = c.queue, id = c.id, state = c.state, ignoreFailure = c.ignore }
    if c.state == 'successful' then
      local v = json.decode(c.value)
      if v == nil then
        item.result = c.value                 -- not JSON (written by hand): the text itself
      elseif v ~= json.null then
        item.result = v
      end
    elseif c.state == 'failed' then
      item.error = c.value
    end
    out[i] = item
  end
  return out
end

-- ---- making a flow's root entry (used by jobrt.client's enqueueFlow) --------------------

-- a number as the text the scripts read
local function numtext(v)
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return fmt('%d', v) end
  return fmt('%.17g', v)
end

-- The spec table of a checked node (see flow_deliver.lua): job, args (JSON text), opts
-- (numbers as text), children (each with queue, id, ignore).
local OPT_KEYS = { 'priority', 'timestamp', 'delay', 'retries', 'timeout' }
local function spec_of(node)
  local s = { job = node.job, args = node.args_json }
  local o
  for _, k in ipairs(OPT_KEYS) do
    if node.opts[k] ~= nil then
      o = o or {}
      o[k] = numtext(node.opts[k])
    end
  end
  s.opts = o
  if #node.children > 0 then
    local kids = {}
    for i, c in ipairs(node.children) do
      local cs = spec_of(c)
      cs.queue, cs.id = c.queue, c.id
      if c.ignoreFailure then cs.ignore = true end
      kids[i] = cs
    end
    s.children = kids
  end
  return s
end

-- The outbox entry that creates the root of a checked tree (every node has queue, id, job,
-- args_json, opts, children, ignoreFailure) in flow fid: { key=, text= }.
function _M.root_entry(root, fid)
  return { key = 'c:' .. root.queue .. '|' .. root.id,
           text = fid .. '\n\n\n0\n0\n' .. assert(json.encode(spec_of(root))) }
end

-- A new flow id: 16 hex digits.
function _M.new_flow_id()
  return (jobrt.random_bytes(8):gsub('.', function(c) return fmt('%02x', c:byte()) end))
end

return _M
