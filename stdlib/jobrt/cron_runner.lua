-- jobrt.cron_runner: the cron entries of the queues one worker serves (README "Cron",
-- lua-server-scripts/README.md "Cron").
--
--   local runner = require('jobrt.cron_runner').new(worker)
--       -- worker: a started jobrt.worker (its ops, jobs, queue_names and log are used)
--   runner:start()          -- registers the job files' entries, loads every served queue's
--                           -- entries, arms one timer per queue; returns at once
--   runner:reload(queue)    -- the queue's entries changed (a "cron" message on its wake
--                           -- channel): read them again
--   runner:resync(queue)    -- after a reconnect (Redis may have lost data or failed over):
--                           -- register the job files' entries again, then reload
--   runner:reconcile()      -- the worker serves other definitions (W:reload): queues no
--                           -- longer served lose their timers (their entries stay, for the
--                           -- workers that serve them); every served queue's file entries are
--                           -- made those the new files declare, then read again; returns at once
--   runner:stop()           -- closes the timers; nothing is enqueued after it returns
--
-- Ownership of the entries declared in job files (`cron = ...` on job JOB of queue Q, named
-- "Q.JOB", source 'file'): the workers that serve Q own them. When a worker starts, it makes Q's
-- file entries exactly those its job files declare for Q: it creates and updates those, and
-- deletes the file entries of Q that no file it serves declares any more. Every worker serving
-- Q must serve the same job definitions for Q anyway (a worker without a job's handler fails
-- that job); during a rolling change, the last worker to start wins. Entries added with
-- `jobrt cron add` (source 'cli') are never touched by workers, and one name is never both.
--
-- Ticks: every worker computes each entry's next tick (jobrt.cron in the entry's zone, on the
-- Redis server's clock: TIME, read at every load and tick) and arms a timer for the earliest.
-- At a tick it enqueues the job with enqueue's once-per-tick guard (stats field
-- cron-last:<name>), so one job is made however many workers fire. The job id is
-- <id_prefix><tick in Unix seconds> (default prefix "cron:<name>:"). Ticks that passed since
-- cron-last (no worker ran, or this one lagged) collapse into one: the latest of them is
-- enqueued; with missed = 'skip', only when it is at most SKIP_LATE seconds old.
local jobrt = require 'jobrt'
local cron = require 'jobrt.cron'
local tz = require 'jobrt.tz'

local pairs, ipairs, type, tostring, tonumber, setmetatable, pcall = pairs, ipairs, type, tostring, tonumber, setmetatable, pcall
local os = os
local fmt, floor = string.format, math.floor

local _M = { SKIP_LATE = 60 }
local R = {}
R.__index = R

function _M.new(worker)
  return setmetatable({ w = worker, queues = {}, stopped = false }, R)
end

-- The server's clock (Unix seconds), from TIME; nil, err when Redis does not answer.
function R:server_now()
  local t, err = self.w.r:call('TIME')
  if type(t) ~= 'table' then return nil, err end
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- What this worker's job files declare for queue q: { [name] = entry table }.
function R:declared(qname)
  local out = {}
  for job, spec in pairs(self.w.jobs[qname] or {}) do
    if spec.cron then
      out[qname .. '.' .. job] = { job = job, args = spec.cron.args, schedule = spec.cron.schedule,
        tz = spec.cron.tz, missed = spec.cron.missed, id_prefix = 'cron:' .. qname .. '.' .. job .. ':',
        hash = spec.cron.hash, source = 'file', file = spec.source }
    end
  end
  return out
end

-- Makes queue q's file entries those the job files declare (see the header: ownership).
function R:register(qname)
  local ops = self.w.ops
  local have, err = ops:cron_entries(qname)
  if self.stopped then return end
  if not have then
    self.w:log('warn', 'queue %s: cannot read its cron entries: %s', qname, tostring(err))
    return
  end
  for name, entry in pairs(self:declared(qname)) do
    local res, serr = ops:cron_set(qname, name, entry)
    if not res then
      self.w:log('error', 'queue %s: cron entry %s (%s): %s', qname, name, tostring(entry.file), tostring(serr))
    elseif res ~= 0 then
      self.w:log('info', 'queue %s: cron entry %s %s: %s %s (%s)', qname, name,
        res == 1 and 'registered' or 'updated', entry.schedule, entry.tz, entry.job)
    end
  end
  local declared = self:declared(qname)
  for name, c in pairs(have) do
    if c.entry.source == 'file' and not declared[name] then
      local ok = ops:cron_delete(qname, name, 'file')
      if ok then self.w:log('info', 'queue %s: cron entry %s removed: no job file declares it any more', qname, name) end
    end
  end
end

function R:start()
  for _, qname in ipairs(self.w.queue_names) do
    self.queues[qname] = { timer = jobrt.timer(), entries = {}, busy = false, again = false }
  end
  -- (the registering runs in a coroutine of its own: start() returns at once)
  jobrt.spawn(function()
    for _, qname in ipairs(self.w.queue_names) do
      if self.stopped then return end
      self:register(qname)
      self:reload(qname)
    end
  end)
end

function R:reconcile()
  if self.stopped then return end
  local served = {}
  for _, qname in ipairs(self.w.queue_names) do
    served[qname] = true
    if not self.queues[qname] then
      self.queues[qname] = { timer = jobrt.timer(), entries = {}, busy = false, again = false }
    end
  end
  for qname, qc in pairs(self.queues) do
    if not served[qname] then
      qc.closed = true                   -- a run under way ends without arming the timer
      qc.timer:close()
      self.queues[qname] = nil
    end
  end
  jobrt.spawn(function()
    for _, qname in ipairs(self.w.queue_names) do
      if self.stopped then return end
      self:register(qname)
      self:reload(qname)
    end
  end)
end

-- Reads queue q's entries again and arms its timer.
function R:reload(qname) return self:run(qname, true) end

function R:resync(qname)
  if not self.queues[qname] or self.stopped then return end
  jobrt.spawn(function()
    self:register(qname)
    self:reload(qname)
  end)
end

-- Enqueues what is due in queue q (after reading its entries again when `load`), computes the
-- next ticks and arms the timer. One run at a time per queue: a run asked for meanwhile
-- follows the current one.
function R:run(qname, load)
  local qc = self.queues[qname]
  if not qc or self.stopped then return end
  if qc.busy then
    qc.again = qc.again or load or 'fire'
    return
  end
  qc.busy = true
  local ok, err = pcall(self.pass, self, qname, qc, load)
  qc.busy = false
  if not ok then
    self.w:log('error', 'queue %s: cron: %s', qname, tostring(err))
    qc.retry = true
  end
  if self.stopped or qc.closed then return end
  if qc.again then
    local again = qc.again
    qc.again = false
    return self:run(qname, again == true or again == 'reload')
  end
  if qc.retry then
    qc.retry = false
    qc.timer:start(1, function() self:run(qname, true) end)
  elseif qc.earliest then
    qc.timer:start(math.max(0, qc.earliest - qc.now), function() self:run(qname) end)
  else
    qc.timer:stop()
  end
end

-- Reads the entries (when load), then enqueues the due ticks; sets qc.earliest and qc.now (or
-- qc.retry when Redis did not answer).
function R:pass(qname, qc, load)
  qc.earliest = nil
  if load then
    local entries, err = self.w.ops:cron_entries(qname)
    if self.stopped then return end
    if not entries then
      self.w:log('warn', 'queue %s: cannot read its cron entries: %s (trying again in 1s)', qname, tostring(err))
      qc.retry = true
      return
    end
    local list, warned = {}, {}
    for name, c in pairs(entries) do
      local e = c.entry
      local sched, perr = cron.parse(e.schedule or '')
      local zone, zerr = tz.load(type(e.tz) == 'string' and e.tz or 'UTC')
      if not sched or not zone or type(e.job) ~= 'string' then
        if not (qc.warned and qc.warned[name]) then
          self.w:log('error', 'queue %s: cron entry %s cannot run: %s', qname, name, tostring(perr or zerr or 'the entry has no job'))
        end
        warned[name] = true
      else
        list[name] = { entry = e, sched = sched, zone = zone, last = c.last }
      end
    end
    qc.warned, qc.entries = warned, list
  end
  local now, err = self:server_now()
  if self.stopped then return end
  if not now then
    self.w:log('warn', 'queue %s: cron: cannot read the server time: %s (trying again in 1s)', qname, tostring(err))
    qc.retry = true
    return
  end
  qc.now = now
  local earliest
  for name, c in pairs(qc.entries) do
    if self.stopped then return end
    local last = (c.last or floor(now * 1000)) / 1000
    local nxt = c.sched:next(last, c.zone)
    if nxt and nxt <= now then
      -- one tick is due, or several (missed while no worker ran, or this one lagged): the latest
      -- of them is enqueued, once across every worker
      local tick = c.sched:latest(now, c.zone, last) or nxt
      local e = c.entry
      local res, verdict = self.w.ops:enqueue_tick(qname, name, tick * 1000,
        e.missed == 'skip' and _M.SKIP_LATE * 1000 or nil, e.job, e.args or '{}',
        { id = (e.id_prefix or ('cron:' .. name .. ':')) .. fmt('%d', tick), jobHash = e.hash or name })
      local when = os.date('!%Y-%m-%d %H:%M:%SZ', tick)
      if res == nil then
        self.w:log('warn', 'queue %s: cron entry %s: cannot enqueue the tick of %s: %s', qname, name, when, tostring(verdict))
        nxt = now + 1                            -- try again in a second
      elseif verdict == 'gone' then
        qc.again = true                          -- deleted meanwhile: read the entries again
        nxt = nil
      else
        if verdict == 'new' or verdict == 'existed' then
          self.w:log('info', 'queue %s: cron entry %s: enqueued job %s (tick %s)', qname, name, tostring(res), when)
        elseif verdict == 'skipped' then
          self.w:log('info', 'queue %s: cron entry %s: skipped the tick of %s: missed while no worker ran (missed = skip)',
            qname, name, when)
        end
        c.last = tick * 1000
        nxt = c.sched:next(tick, c.zone)
      end
    end
    if nxt and (not earliest or nxt < earliest) then earliest = nxt end
  end
  qc.earliest = earliest
end

function R:stop()
  self.stopped = true
  for _, qc in pairs(self.queues) do qc.timer:close() end
end

return _M
