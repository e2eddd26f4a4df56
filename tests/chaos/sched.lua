-- tests/chaos/sched.lua: scheduling and flow control in the `make chaos` mix (issue 13): a cron
-- entry, a max-active limit and a rate limit live through the same faults as everything else.
--
--   local sched = require 'tests.chaos.sched'
--   local s = sched.start(client, url, say)   -- before the producers: the cron entry
--             chaos-tick (@every 1s, job `ok` on chaos_q), max-active on chaos_lb, a rate on
--             chaos_del, and a sampler of chaos_lb's leases every 50 ms (its own connection)
--   s:stop_cron()                             -- when enqueueing stops (Redis is up again): the
--                                             -- entry is deleted, no tick after it
--   s:add_ticks(r, L, jobs, by_queue)         -- the ticks' jobs join the acknowledged jobs (their
--                                             -- records in Redis, and their runs in the ledger),
--                                             -- so the lost, duplicate and overlap checks see them
--   s:clear_limits()                          -- after the drain, before the probes (a probe holds
--                                             -- its slot until every child took one)
--   s:check(L, faults, lease) -> trouble, info
--       trouble: texts for the report's violations; info: { cron_ticks=, max_active_seen=,
--       rate_max_window= } for the CHAOS-RESULT line
-- The checks:
--   * cron: consecutive ticks more than 3 s apart with no fault (of any kind) in between, plus
--     the lease: a worker serving chaos_q was running, so each second had to have its job;
--   * max-active: the leases of chaos_lb sampled above the limit (the server enforces it inside
--     reserve, so no fault excuses it: a Redis restart with AOF can only lose leases);
--   * rate: runs of chaos_del that started (ledger clock) within one window of RATE_PER seconds,
--     more than RATE_N + 3 of them (3 for the time between reserve and a handler's first write on
--     a loaded machine) in a window no fault touches.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'

local fmt, floor = string.format, math.floor

local _M = { CRON = 'chaos-tick', CRON_QUEUE = 'chaos_q', MAX_ACTIVE = 6, MAX_ACTIVE_QUEUE = 'chaos_lb',
             RATE_N = 12, RATE_PER = 1, RATE_QUEUE = 'chaos_del' }
local S = {}
S.__index = S

-- Calls fn until it answers (Redis may be down for a moment during a fault); raises after 60 s.
local function retry(what, fn)
  local deadline = jobrt.monotime() + 60
  while true do
    local ok, v = pcall(fn)
    if ok then return v end
    if jobrt.monotime() > deadline then error('chaos sched: ' .. what .. ': ' .. tostring(v), 0) end
    jobrt.sleep(0.5)
  end
end

function _M.start(client, url, say)
  local self = setmetatable({ client = client, say = say, max_seen = 0, sampling = true }, S)
  retry('add the cron entry', function()
    return client:addCron(_M.CRON, _M.CRON_QUEUE, 'ok', '@every 1s', { k = 'cron', segs = { 0.01 } })
  end)
  retry('set max-active', function() return client:limit(_M.MAX_ACTIVE_QUEUE, { max_active = _M.MAX_ACTIVE }) end)
  retry('set the rate', function() return client:limit(_M.RATE_QUEUE, { rate = _M.RATE_N, per = _M.RATE_PER }) end)
  say('scheduling mix: cron %s (@every 1s on %s), max-active %d on %s, rate %d per %gs on %s', _M.CRON,
    _M.CRON_QUEUE, _M.MAX_ACTIVE, _M.MAX_ACTIVE_QUEUE, _M.RATE_N, _M.RATE_PER, _M.RATE_QUEUE)
  self.sampler = jobrt.spawn(function()
    local r
    local key = 'jobrt:{' .. _M.MAX_ACTIVE_QUEUE .. '}:active'
    while self.sampling do
      if not r then r = redis.connect(url) end
      local n = r and r:call('ZCARD', key)
      if type(n) == 'number' then
        if n > self.max_seen then self.max_seen = n end
        if n > _M.MAX_ACTIVE then
          self.over = self.over or {}
          self.over[#self.over + 1] = fmt('%d leases held at once in %s at %s (max-active %d)', n,
            _M.MAX_ACTIVE_QUEUE, os.date('!%H:%M:%S', floor(jobrt.now())), _M.MAX_ACTIVE)
        end
      elseif r and n == nil then
        r:close()
        r = nil
      end
      jobrt.sleep(0.05)
    end
    if r then r:close() end
  end)
  return self
end

function S:stop_cron()
  self.stopped_at = jobrt.now()
  retry('delete the cron entry', function() return self.client:deleteCron(_M.CRON) end)
end

function S:clear_limits()
  self.sampling = false
  retry('clear max-active', function() return self.client:limit(_M.MAX_ACTIVE_QUEUE, { clear = true }) end)
  retry('clear the rate', function() return self.client:limit(_M.RATE_QUEUE, { clear = true }) end)
end

local PREFIX = 'cron:' .. _M.CRON .. ':'

function S:add_ticks(r, L, jobs, by_queue)
  local ledger = require 'tests.chaos.ledger'
  local ids, cursor = {}, '0'
  repeat
    local rep = assert(r:call('SCAN', cursor, 'MATCH', 'jobrt:{' .. _M.CRON_QUEUE .. '}:job:' .. PREFIX .. '*', 'COUNT', 1000))
    cursor = rep[1]
    for _, k in ipairs(rep[2]) do ids[k:match(':job:(.+)$')] = true end
  until cursor == '0'
  for _, run in ipairs(L.order) do
    if run.q == _M.CRON_QUEUE and run.id:sub(1, #PREFIX) == PREFIX then ids[run.id] = true end
  end
  self.ticks = {}
  for id in pairs(ids) do
    local key = ledger.qid(_M.CRON_QUEUE, id)
    local tick = tonumber(id:sub(#PREFIX + 1))
    if tick and not jobs[key] then
      jobs[key] = { q = _M.CRON_QUEUE, id = id, fn = 'ok', acks = 1, t = tick }
      by_queue[_M.CRON_QUEUE] = (by_queue[_M.CRON_QUEUE] or 0) + 1
    end
    if tick then self.ticks[#self.ticks + 1] = tick end
  end
  table.sort(self.ticks)
  self.say('cron: %d tick jobs of %s join the checks', #self.ticks, _M.CRON)
end

-- a fault whose effect [t0, t1 + margin] meets [a, b]
local function any_fault(faults, a, b, margin)
  for _, f in ipairs(faults) do
    if f.t0 <= b and (f.t1 or f.t0) + margin >= a then return f end
  end
end

function S:check(L, faults, lease)
  local trouble = {}
  local margin = lease + 3
  -- cron: a job for every second while workers ran, except where a fault explains a gap
  local t = self.ticks or {}
  if #t == 0 then trouble[#trouble + 1] = 'cron: the entry ' .. _M.CRON .. ' made no job at all' end
  for i = 2, #t do
    if t[i] - t[i - 1] > 3 and not any_fault(faults, t[i - 1], t[i], margin) then
      trouble[#trouble + 1] = fmt('cron: no job for the %d ticks between %s and %s, and no fault explains it',
        t[i] - t[i - 1] - 1, os.date('!%H:%M:%S', t[i - 1]), os.date('!%H:%M:%S', t[i]))
    end
  end
  -- max-active, sampled
  for _, s in ipairs(self.over or {}) do trouble[#trouble + 1] = 'max-active: ' .. s end
  -- rate: starts of the rate-limited queue per window, from the ledger's clock
  local starts = {}
  for _, run in ipairs(L.order) do
    if run.q == _M.RATE_QUEUE and run.start then starts[#starts + 1] = run.start end
  end
  table.sort(starts)
  local most, j = 0, 1
  for i = 1, #starts do
    while starts[i] - starts[j] >= _M.RATE_PER do j = j + 1 end
    local n = i - j + 1
    if n > most then most = n end
    if n > _M.RATE_N + 3 and not any_fault(faults, starts[j], starts[i], margin) then
      trouble[#trouble + 1] = fmt('rate: %d runs of %s started within %gs at %s (limit %d per %gs), and no fault explains it',
        n, _M.RATE_QUEUE, _M.RATE_PER, os.date('!%H:%M:%S', floor(starts[j])), _M.RATE_N, _M.RATE_PER)
      break
    end
  end
  return trouble, { cron_ticks = #t, max_active_seen = self.max_seen, rate_max_window = most }
end

return _M
