-- tests/chaos/faults.lua: the faults of `make chaos`: a schedule drawn from a seed (so a run can
-- be replayed with CHAOS_SEED), the code that injects each fault, and the few /proc look-ups
-- they need (worker children, whether a pid is still the process we started).
--
--   faults.KINDS                  the fault kinds, in the order the report lists them
--   faults.prng(seed) -> g        g:next() in [0,1), g:int(a, b), g:uniform(a, b), g:chance(p)
--                                 (Park-Miller minimal standard generator: the same sequence on
--                                 every machine, whatever else calls math.random)
--   faults.schedule(seed, seconds, nworkers, lease) -> { {at=, kind=, slot=, child=, dur=}... }
--                                 at: seconds after the soak started; every kind at least once
--   faults.inject(ev, ctx) -> fault record | nil, why skipped
--                                 yields until the fault is over (a SIGSTOP ends with SIGCONT, a
--                                 restart when the process serves again); the record is
--                                 { kind=, slot=, t0=, t1=, pids = {[pid]=true}, redis=, desc= }
--                                 with wall-clock times (t1 may be filled in later, see below)
--   faults.stat(pid) -> { ppid=, state=, start= } | nil      (/proc/<pid>/stat)
--   faults.children(pid) -> { pid... }                        (/proc/<pid>/task/<pid>/children)
--   faults.alive(pid, start) -> bool     pid exists, is not a zombie, and started at `start`
--   faults.signal(pid, name, start) -> bool   sends SIGKILL|SIGTERM|SIGSTOP|SIGCONT if alive
--
-- ctx (given by the driver): ctx.workers[slot] (objects with :tree(), :start(), :kill(sig),
-- :expect_exit(), :wait_exit(timeout), .busy), ctx.redis (a tests/helpers.lua server),
-- ctx.trouble(text) (a process misbehaved: a violation), ctx.log(text), ctx.t_base (the
-- wall-clock start of the soak, for messages), ctx.pending (a
-- jobrt.waitgroup for the follow-ups that outlive inject: waiting for orphaned children).
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'

local fmt, floor = string.format, math.floor

local _M = {}

_M.KINDS = { 'kill9-worker', 'kill9-child', 'sigstop-worker', 'sigterm-worker', 'redis-restart', 'redis-sigstop' }

local SIGNALS = { SIGKILL = 9, SIGTERM = 15, SIGSTOP = 19, SIGCONT = 18 }   -- Linux numbers
_M.SIGNALS = SIGNALS

-- ---- seeded numbers -------------------------------------------------------------------

local G = {}
G.__index = G

function _M.prng(seed)
  local s = floor(tonumber(seed) or 1) % 2147483647
  if s <= 0 then s = s + 2147483646 end
  local g = setmetatable({ s = s }, G)
  for _ = 1, 3 do g:next() end
  return g
end

function G:next()
  self.s = (self.s * 48271) % 2147483647        -- exact in doubles (< 2^53)
  return (self.s - 1) / 2147483646
end
function G:int(a, b) return a + floor(self:next() * (b - a + 1)) end
function G:uniform(a, b) return a + self:next() * (b - a) end
function G:chance(p) return self:next() < p end
function G:pick(list) return list[self:int(1, #list)] end

-- ---- the schedule ---------------------------------------------------------------------

-- Faults are spread evenly over [5 s, seconds - 6 s], one per slot of about 7 s at a random
-- place in the first half of its slot; the first #KINDS are a shuffle of every kind, the rest
-- are drawn at random. A worker is frozen for 1.5-3 leases; Redis for 3 s.
function _M.schedule(seed, seconds, nworkers, lease)
  local g = _M.prng(seed * 7 + 1)
  local first, last = 5, math.max(seconds - 6, 6)
  local n = math.max(#_M.KINDS, floor((last - first) / 7))
  local w = (last - first) / n
  local kinds = {}
  for i, k in ipairs(_M.KINDS) do kinds[i] = k end
  for i = #kinds, 2, -1 do
    local j = g:int(1, i)
    kinds[i], kinds[j] = kinds[j], kinds[i]
  end
  local out = {}
  for i = 1, n do
    local kind = kinds[i] or g:pick(_M.KINDS)
    local ev = { at = first + (i - 1) * w + g:uniform(0, w / 2), kind = kind,
                 slot = g:int(1, nworkers), child = g:int(1, 2) }
    if kind == 'sigstop-worker' then ev.dur = lease * g:uniform(1.5, 3) end
    if kind == 'redis-sigstop' then ev.dur = 3 end
    out[i] = ev
  end
  return out
end

-- ---- /proc ------------------------------------------------------------------------------

function _M.stat(pid)
  local f = io.open('/proc/' .. pid .. '/stat', 'r')
  if not f then return nil end
  local s = f:read('*a')
  f:close()
  local rest = s and s:match('^%d+ %(.*%) (.*)$')
  if not rest then return nil end
  local fields = {}
  for x in rest:gmatch('%S+') do fields[#fields + 1] = x end
  -- rest starts at field 3 (state): ppid is field 4, starttime field 22
  return { state = fields[1], ppid = tonumber(fields[2]), start = fields[20] }
end

function _M.children(pid)
  local out = {}
  local f = io.open(('/proc/%d/task/%d/children'):format(pid, pid), 'r')
  if not f then return out end
  local s = f:read('*a') or ''
  f:close()
  for x in s:gmatch('%d+') do
    local c = tonumber(x)
    local st = _M.stat(c)
    if st and st.state ~= 'Z' then out[#out + 1] = c end
  end
  table.sort(out)
  return out
end

function _M.alive(pid, start)
  local st = _M.stat(pid)
  return st ~= nil and st.state ~= 'Z' and (start == nil or st.start == start)
end

function _M.signal(pid, name, start)
  if not _M.alive(pid, start) then return false end
  return proc.kill(pid, assert(SIGNALS[name], name)) == true
end

-- ---- injecting --------------------------------------------------------------------------

local function pidset(tree)
  local s = {}
  for _, p in ipairs(tree) do s[p.pid] = true end
  return s
end

local function pidlist(tree)
  local l = {}
  for _, p in ipairs(tree) do l[#l + 1] = tostring(p.pid) end
  return table.concat(l, ',')
end

-- Waits (polling /proc; a process we did not start cannot be waited for otherwise) until every
-- process of `tree` is gone; false after `timeout` seconds.
local function wait_gone(tree, timeout)
  local deadline = jobrt.monotime() + timeout
  while true do
    local any = false
    for _, p in ipairs(tree) do if _M.alive(p.pid, p.start) then any = true end end
    if not any then return true end
    if jobrt.monotime() > deadline then return false end
    jobrt.sleep(0.1)
  end
end

local inject = {}

-- kill -9 of a worker's supervisor. Its children notice (their heartbeat pipe breaks), stop
-- gracefully and exit; a new supervisor is started in the slot at once. The fault lasts until
-- the orphaned children are gone.
inject['kill9-worker'] = function(ev, ctx, w)
  local tree = w:tree()
  local f = { pids = pidset(tree), desc = 'supervisor and children ' .. pidlist(tree) }
  w:expect_exit()
  f.t0 = jobrt.now()
  w:kill('SIGKILL')
  if not w:wait_exit(10) then ctx.trouble(fmt('worker %d: supervisor %d still there 10 s after kill -9', w.slot, tree[1].pid)) end
  w:start()
  local orphans = { unpack(tree, 2) }
  ctx.pending:spawn(function()
    if not wait_gone(orphans, 60) then
      ctx.trouble(fmt('worker %d: children %s of a killed supervisor still alive 60 s later (orphans serving unsupervised?)',
        w.slot, pidlist(orphans)))
    end
    f.t1 = jobrt.now()
    ctx.log(fmt('fault kill9-worker at +%.1fs on worker %d: orphaned children %s gone after %.1fs',
      f.t0 - (ctx.t_base or 0), w.slot, pidlist(orphans), f.t1 - f.t0))
  end)
  return f
end

-- kill -9 of one worker child; its supervisor must start another.
inject['kill9-child'] = function(ev, ctx, w)
  local tree = w:tree()
  if #tree < 2 then return nil, 'the worker has no child right now' end
  local victim = tree[2 + (ev.child - 1) % (#tree - 1)]
  local f = { pids = { [victim.pid] = true }, desc = 'child ' .. victim.pid }
  f.t0 = jobrt.now()
  _M.signal(victim.pid, 'SIGKILL', victim.start)
  f.t1 = f.t0
  local deadline = jobrt.monotime() + 15
  while #w:children() < w.procs do
    if jobrt.monotime() > deadline then
      ctx.trouble(fmt('worker %d: supervisor %d did not replace its killed child %d within 15 s',
        w.slot, tree[1].pid, victim.pid))
      break
    end
    jobrt.sleep(0.1)
  end
  return f
end

-- SIGSTOP of a worker (supervisor and children) for ev.dur seconds (longer than the lease),
-- then SIGCONT.
inject['sigstop-worker'] = function(ev, ctx, w)
  local tree = w:tree()
  local f = { pids = pidset(tree), desc = fmt('supervisor and children %s frozen %.1fs', pidlist(tree), ev.dur) }
  f.t0 = jobrt.now()
  for _, p in ipairs(tree) do _M.signal(p.pid, 'SIGSTOP', p.start) end
  jobrt.sleep(ev.dur)
  for i = #tree, 1, -1 do _M.signal(tree[i].pid, 'SIGCONT', tree[i].start) end
  f.t1 = jobrt.now()
  return f
end

-- SIGTERM of a worker: it must stop gracefully (jobs in flight finish or are handed back);
-- then a new one is started in its slot.
inject['sigterm-worker'] = function(ev, ctx, w)
  local tree = w:tree()
  local f = { pids = pidset(tree), desc = 'supervisor and children ' .. pidlist(tree) }
  w:expect_exit()
  f.t0 = jobrt.now()
  w:kill('SIGTERM')
  if not w:wait_exit(45) then
    ctx.trouble(fmt('worker %d: supervisor %d did not stop within 45 s of SIGTERM (killed)', w.slot, tree[1].pid))
    w:kill('SIGKILL')
    w:wait_exit(10)
  end
  if not wait_gone(tree, 10) then
    ctx.trouble(fmt('worker %d: processes %s still alive after their supervisor stopped on SIGTERM', w.slot, pidlist(tree)))
  end
  w:start()
  f.t1 = jobrt.now()
  return f
end

-- kill -9 of redis-server, started again at once on its port with its AOF.
inject['redis-restart'] = function(ev, ctx)
  local f = { redis = true, desc = 'kill -9, restarted from its AOF' }
  f.t0 = jobrt.now()
  ctx.redis:restart()
  f.t1 = jobrt.now()
  return f
end

-- SIGSTOP of redis-server for ev.dur seconds, then SIGCONT.
inject['redis-sigstop'] = function(ev, ctx)
  local f = { redis = true, desc = fmt('frozen %.1fs', ev.dur) }
  f.t0 = jobrt.now()
  ctx.redis.proc:kill('SIGSTOP')
  jobrt.sleep(ev.dur)
  ctx.redis.proc:kill('SIGCONT')
  f.t1 = jobrt.now()
  return f
end

function _M.inject(ev, ctx)
  local fn = assert(inject[ev.kind], ev.kind)
  -- the target: Redis, or the scheduled worker (the next one when it is under another fault);
  -- when every target is under a fault, wait up to 15 s for one to be free, else skip
  local w
  local deadline = jobrt.monotime() + 15
  while true do
    if ev.kind:match('^redis') then
      if not ctx.redis_busy then ctx.redis_busy = true; break end
    else
      for i = 0, #ctx.workers - 1 do
        local c = ctx.workers[(ev.slot - 1 + i) % #ctx.workers + 1]
        if not c.busy then w = c; break end
      end
      if w then w.busy = true; break end
    end
    if jobrt.monotime() > deadline then
      return nil, ev.kind:match('^redis') and 'Redis was under another fault for 15 s'
        or 'every worker was under another fault for 15 s'
    end
    jobrt.sleep(0.1)
  end
  local ok, f, why = pcall(fn, ev, ctx, w)
  if w then w.busy = false else ctx.redis_busy = false end
  if not ok then error(f, 0) end
  if f then
    f.kind, f.slot = ev.kind, w and w.slot
    ctx.log(fmt('fault %s at +%.1fs%s: %s%s', ev.kind, f.t0 - (ctx.t_base or 0),
      w and (' on worker ' .. w.slot) or '', f.desc, f.t1 and fmt(' (over after %.1fs)', f.t1 - f.t0)
      or ' (its orphaned children stop by themselves)'))
  end
  return f, why
end

return _M
