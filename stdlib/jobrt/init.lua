-- jobrt: the loop primitives, and the client API (jobrt.connect).
--
--   jobrt.spawn(fn, ...)      start fn in a new coroutine; returns it
--   jobrt.sleep(seconds)      park the running coroutine
--   jobrt.now()               wall clock, seconds with microseconds
--   jobrt.monotime()          monotonic seconds
--   jobrt.on_signal(name, fn) fn(name) runs in a new coroutine on each signal
--   jobrt.timer()             re-armable timer: t:start(s, fn[, repeat]), t:stop(), t:close()
--   jobrt.suspend()/wake(co, ...)  park / resume from the loop
--   jobrt.cancel(co)          the coroutine never runs again
--   jobrt.scope([on_expire])  a job scope: s:spawn(fn, ...) runs fn in a coroutine of the scope
--                             (coroutines it spawns join it too); s:set_deadline(t) (monotonic
--                             seconds, jobrt.monotime's clock; nil: none): a member is never
--                             resumed after t, the scope ends and on_expire(s) runs in a new
--                             coroutine; s:cancel() -> n ends it at once (members never run
--                             again, a running one stops at its next yield); s:ended(); s:live()
--   jobrt.scope_of([co])      the scope of co (default: the running coroutine), or nil
--   jobrt.waitgroup()         wg:spawn(fn, ...), wg:wait([timeout]) -> true | false, "timeout"
--   jobrt.cond()              c:wait([timeout]) -> values | false, "timeout"; c:signal(...); c:broadcast(...)
--   jobrt.connect(url_or_table) -> queue client (see jobrt.client)
--   jobrt.json                the JSON module (see jobrt.json); jobrt.null is its null
--   jobrt.redis               the Redis module (jobrt.redis.connect(url_or_table), see jobrt.redis)
--   jobrt.exec(cmd[, opts])   run a command without blocking the loop (see jobrt.exec): yields,
--                             has a timeout, and is killed when the job that started it ends
local core = require 'jobrt.core'
local timer = require 'jobrt.core.timer'
local signal = require 'jobrt.core.signal'
local json = require 'jobrt.json'

local setmetatable, select, unpack = setmetatable, select, unpack
local running, traceback, xpcall = coroutine.running, debug.traceback, xpcall
local suspend, wake, spawn = core.suspend, core.wake, core.spawn

local _M = {
  _VERSION = core.versions().jobrt,
  spawn = spawn,
  sleep = timer.sleep,
  timer = timer.timer,
  now = core.now,
  monotime = core.monotime,
  suspend = suspend,
  wake = wake,
  cancel = core.cancel,
  scope = core.scope,
  scope_of = core.scope_of,
  status = core.status,
  on_signal = signal.on_signal,
  versions = core.versions,
  pid = core.pid,
  hostname = core.hostname,
  random_bytes = core.random_bytes,
  live = core.live,
  exit = core.exit,
  null = json.null,              -- the same value as cjson.null and redis.null
  json = json,
}

-- Logging (runtime/log.c): each line gets an RFC 3339 UTC timestamp with milliseconds and is
-- text ("2025-05-01T10:00:00.123Z jobrt[1234] info: msg") or, with --log-format json or
-- JOBRT_LOG_FORMAT=json, one JSON object per line {"ts","level","pid","msg", fields...}.
-- Lines below warn are buffered and written once per loop turn; warn and error at once.
--   jobrt.log(level, fmt, ...)                 level: "debug" | "info" | "warn" | "error"
--   jobrt.log_fields(level, fields, fmt, ...)  fields: { key1, value1, key2, value2, ... }
--                                              (strings, numbers, booleans; JSON output only)
--   jobrt.log_job(queue, job, id, attempt, ms, worker, ok, reason)   the worker's line per job
--       (info): "Q.job id=7 attempt=1 ok 2.5ms" / "... failed 2.5ms: reason"; in JSON also the
--       fields queue, job, id, attempt, ms, worker, result ("ok" | "failed") and error
--   jobrt.set_log_level(name) / jobrt.set_log_format("text" | "json") -> true | nil, message
--   jobrt.log_format() -> "text" | "json"
local LEVELS = { debug = 0, info = 1, warn = 2, error = 3 }
_M.LOG_LEVELS = LEVELS
local core_log, log_level = core.log, core.log_level
local json_logs = core.log_format() == "json"
function _M.log(level, fmt, ...)
  local n = LEVELS[level] or level
  if n < log_level() then return end
  core_log(n, select('#', ...) > 0 and fmt:format(...) or fmt)
end
function _M.log_fields(level, fields, fmt, ...)
  local n = LEVELS[level] or level
  if n < log_level() then return end
  core_log(n, select('#', ...) > 0 and fmt:format(...) or fmt, json_logs and fields or nil)
end
_M.log_job = core.log_job
function _M.set_log_level(name)
  local n = LEVELS[name]
  if not n then
    return nil, ("unknown log level '%s': use debug, info, warn or error"):format(tostring(name))
  end
  core.set_log_level(n)
  return true
end
function _M.set_log_format(name)
  local ok, err = core.set_log_format(tostring(name))
  if not ok then return nil, err end
  json_logs = name == "json"
  return true
end
_M.log_format = core.log_format

-- Parks the running coroutine until woken, or until `timeout` seconds pass
-- (then returns false, "timeout"). `register(co)` is told who to wake.
local function wait_woken(timeout)
  local co = running()
  local t
  if timeout then
    t = timer.timer()
    t:start(timeout, function() wake(co, false, "timeout") end)
  end
  local r = { suspend() }
  if t then t:close() end
  return unpack(r)
end

-- Condition: coroutines wait until signalled.
local Cond = {}
Cond.__index = Cond
function _M.cond() return setmetatable({ waiters = {} }, Cond) end
function Cond:wait(timeout)
  local co = running()
  self.waiters[#self.waiters + 1] = co
  local r = { wait_woken(timeout) }
  for i = #self.waiters, 1, -1 do
    if self.waiters[i] == co then table.remove(self.waiters, i) end
  end
  return unpack(r)
end
function Cond:signal(...)
  local ws = self.waiters
  while #ws > 0 do
    local co = table.remove(ws, 1)
    if wake(co, true, ...) then return true end
  end
  return false
end
function Cond:broadcast(...)
  local ws = self.waiters
  self.waiters = {}
  for i = 1, #ws do wake(ws[i], true, ...) end
  return #ws
end

-- Wait group: wait for several coroutines. An error in one is reported
-- with its traceback (and kept in wg.errors); the others go on.
local WG = {}
WG.__index = WG
function _M.waitgroup() return setmetatable({ n = 0, errors = {}, done = _M.cond() }, WG) end
function WG:spawn(fn, ...)
  self.n = self.n + 1
  return spawn(function(...)
    local ok, err = xpcall(fn, traceback, ...)
    if not ok then
      self.errors[#self.errors + 1] = err
      core.log(3, "coroutine failed: " .. tostring(err))
    end
    self.n = self.n - 1
    if self.n == 0 then self.done:broadcast() end
  end, ...)
end
function WG:wait(timeout)
  if self.n == 0 then return true end
  return self.done:wait(timeout)
end

function _M.connect(...)
  return require('jobrt.client').connect(...)
end

_M.redis = require 'jobrt.redis'

function _M.exec(...)
  return require('jobrt.exec')(...)
end

return _M
