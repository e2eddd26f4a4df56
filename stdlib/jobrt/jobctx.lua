-- jobrt.jobctx: the `job` table a handler receives as its second argument.
--
--   handler(args, job):
--   job.id, job.queue, job.name      the job id, its queue, the job (handler) name
--   job.attempt                      1 for the first attempt; it only grows (a retry, a lease
--                                    lost, a hand-back by a stopping worker each make a new
--                                    attempt), and the job's lease belongs to this attempt only
--   job.fence                        the lease's fencing token: grows with every lease handed out
--                                    in the queue, so for any jobHash (or id) a later holder has a
--                                    larger token. Pass it to the systems you write to and have
--                                    them refuse a write whose token is smaller than the last one
--                                    they accepted for that resource: then a handler that runs on
--                                    after its worker lost the lease (a frozen process) cannot
--                                    overwrite the work of the attempt that replaced it.
--   job.hash                         the jobHash (LBQUEUE, DELQUEUE), or nil
--   job.worker                       the id of the worker running it
--   job.redis                        a Redis connection lent to this job alone until it ends
--                                    (jobrt.pool): job.redis:call(...) yields and raises on any
--                                    error (the job fails, retries apply); job.redis:try(...)
--                                    returns nil, err instead. Taken on first use.
--   job.children                     a parent of a flow (q:enqueueFlow): its children's outcomes,
--                                    in the order they were given: { queue=, id=, state=
--                                    'successful'|'failed'|'deleted', result= (decoded, when
--                                    successful), error= (the reason, when failed),
--                                    ignoreFailure= bool }... (jobrt.flows); {} for a job that
--                                    has no children. Read from Redis on first use (it yields).
--   job:enqueue(queue, job, args, opts) -> id   enqueue another job (raises on error)
--   job:progress(value) -> true | false   value: a number from 0 to 100, or a table (JSON): kept
--                                    in the record (field progress) and published on
--                                    jobrt:{Q}:progress, where q:run's on_progress and enqueue
--                                    --wait see it (progress.lua). false: this attempt no
--                                    longer holds its lease (it is being stopped). Raises on a
--                                    bad value or a Redis error.
--   job:retry_later(seconds[, reason])  ends the handler here: the job runs again after
--                                    `seconds` (0 to 31536000) without using up a retry, for an
--                                    outside service's limit (BullMQ's RateLimitError;
--                                    postpone.lua). It raises a value the worker recognizes:
--                                    call it in the handler's own coroutine, and a pcall that
--                                    catches it must raise it again.
local json = require 'jobrt.json'
local jobrt = require 'jobrt'
local flows = require 'jobrt.flows'

local type, rawget, rawset, pcall, error, tostring, setmetatable, getmetatable =
      type, rawget, rawset, pcall, error, tostring, setmetatable, getmetatable
local fmt = string.format

local _M = {}
local Ctx = {}

local function first_line(s)
  s = tostring(s)
  return s:match("^([^\n]*)") or s
end

Ctx.__index = function(t, k)
  if k == "redis" then
    local st = rawget(t, "_state")
    -- coroutines of the job asking at once share the one connection being made
    while st.acquiring do st.acquiring:wait() end
    if st.done then error("job.redis: the job has ended", 2) end
    if st.redis then return st.redis end
    st.acquiring = jobrt.cond()
    local c, err = st.worker.pool:acquire()
    local waiting = st.acquiring
    st.acquiring = nil
    waiting:broadcast()
    if not c then error("job.redis: cannot connect to Redis: " .. tostring(err), 2) end
    if st.done then              -- the job ended while we connected
      st.worker.pool:release(c)
      error("job.redis: the job has ended", 2)
    end
    st.redis = c
    rawset(t, "redis", c)
    return c
  end
  if k == "children" then
    local st = rawget(t, "_state")
    local list, err = flows.children(st.worker.ops, st.queue.name, st.id)
    if not list then error("job.children: cannot read the children's results: " .. tostring(err), 2) end
    rawset(t, "children", list)
    return list
  end
  return Ctx[k]
end

-- job:enqueue(queue, name, args, opts) -> id (raises on error)
-- args are encoded by jobrt.json with sorted keys, at most the worker's max_payload bytes.
function Ctx:enqueue(queue, name, args, opts)
  local w = rawget(self, "_state").worker
  local text, jerr, code = json.encode(args == nil and {} or args, w.args_out)
  if not text then
    if code == "ETOOBIG" then
      error(fmt("job:enqueue: %s (the worker's --max-payload / max_payload)", jerr), 2)
    end
    error(fmt("job:enqueue: args cannot be stored as JSON (%s): pass tables of strings, numbers and booleans",
      first_line(jerr)), 2)
  end
  local ops = w.ops
  local ok2, id, err = pcall(ops.enqueue, ops, queue, name, text, opts)
  if not ok2 then error((tostring(id):gsub("^.-jobrt%.ops%.enqueue: ", "job:enqueue: ")), 2) end
  if not id then error("job:enqueue: " .. tostring(err), 2) end
  return id
end

-- job:progress(value) -> true | false (see the header)
function Ctx:progress(value)
  local st = rawget(self, "_state")
  local tv = type(value)
  if tv == "number" then
    if value ~= value or value < 0 or value > 100 then
      error(fmt("job:progress: a number must be from 0 to 100 (a percentage), got %s", tostring(value)), 2)
    end
  elseif tv ~= "table" then
    error(fmt("job:progress: value must be a number from 0 to 100 or a table (stored as JSON), got %s", tv), 2)
  end
  local text, jerr = json.encode(value, { name = "value" })
  if not text then
    error(fmt("job:progress: the value cannot be stored as JSON (%s): pass tables of strings, numbers and booleans",
      first_line(jerr)), 2)
  end
  if st.done then return false end
  local w = st.worker
  local res, err = w.ops:progress(st.queue.name, w.id, st.id, st.attempt, text)
  if res == nil then error("job:progress: " .. tostring(err), 2) end
  return res
end

-- The value job:retry_later raises; the worker recognizes it (retry_later_of).
local Later = {}
Later.__index = Later
Later.__tostring = function(l)
  return fmt("job:retry_later(%g): the job runs again later without using up a retry (raise this value again if you caught it)", l.delay)
end

function Ctx:retry_later(seconds, reason)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds > 31536000 then
    error(fmt("job:retry_later: seconds must be a number from 0 to 31536000, got %s", tostring(seconds)), 2)
  end
  if reason ~= nil and type(reason) ~= "string" then
    error(fmt("job:retry_later: reason must be a string, got %s", type(reason)), 2)
  end
  error(setmetatable({ delay = seconds, reason = reason }, Later), 0)
end

-- The { delay=, reason= } of an error value raised by job:retry_later, or nil.
function _M.retry_later_of(e)
  if type(e) == "table" and getmetatable(e) == Later then return e end
  return nil
end

-- The context for one attempt. state: the worker's record of the running attempt (its
-- `worker` field is the worker, `redis` is set when job.redis is taken, `done` once it ended).
function _M.new(state, job, qname, worker_id)
  return setmetatable({ id = job.id, queue = qname, attempt = job.attempt, fence = job.fence, name = job.fn,
                        hash = job.hash, worker = worker_id, _state = state }, Ctx)
end

-- Gives job.redis back to the pool when the job took it (clean connections are kept).
function _M.release(state)
  local c = state.redis
  if c then
    state.redis = nil
    state.worker.pool:release(c)
  end
end

return _M
