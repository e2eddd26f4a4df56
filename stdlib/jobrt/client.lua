-- jobrt.client: the queue client that jobrt.connect returns (DESIGN "Client API").
--
--   local q = jobrt.connect("redis://127.0.0.1:6379" | {host=, port=, ..., max_payload=} | nil [, callback])
--       nil: $JOBRT_REDIS, else this directory's private Redis (./.jobrt/redis.sock, see
--       jobrt.localredis) when there is one, else redis://127.0.0.1:6379
--       max_payload: the largest args this client sends, as JSON text, in bytes (default
--       jobrt.json.MAX_PAYLOAD, 16 MiB; at most jobrt.json.CEILING, 512 MiB). The enqueue script
--       checks the same limit. Args over it raise "...larger than the limit..." before anything is
--       sent. (Every other key of the table is the connection's: see jobrt.redis.connect.)
--   q:enqueueJob(queue, job, args, opts)          -> id
--   q:enqueueJobs(queue, { {job=, args=, opts=} | {job, args, opts}, ... }) -> { id, ... }
--   q:run(queue, job, args, opts)                 -> the job's result, its id (opts.wait: seconds to wait)
--   q:getJob(queue, id)                           -> record (field -> string) | nil
--   q:deleteJob(queue, id)                        -> true | false (no such job)
--   q:retryFailedJobs(queue) -> n ;  q:deleteFailedJobs(queue) -> n
--   q:retryFailedJob(queue, id) -> true | false (not in the failed set)
--   q:listFailedJobs(queue[, offset, count])      -> records (newest first), total
--   q:stats(queue) -> counts ;  q:stats() -> { [queue] = counts } for every queue in RESERVED:QCONFIG
--   q:workers()                                   -> live worker records, sorted by id
--   q:queueType(queue)                            -> type | nil (none set)
--   q:queueType(queue, type)                      -> type (sets it)
--   q:queueNames()                                -> every queue in RESERVED:QCONFIG, sorted
--   q:registerWorker(redisConfig, jobDescription[, opts]) -> worker (see jobrt.worker)
--   q:close()
--   Scheduling, flow control and maintenance (issue 13; in jobrt.client_sched, same two forms):
--   q:pause(queue) / q:resume(queue), q:limit(queue[, limits]), q:queues(), q:drain(queue),
--   q:obliterate(queue[, {force=}]), q:addCron(name, queue, job, expr[, args[, opts]]),
--   q:listCron(), q:deleteCron(name); q:run(..., { on_progress = fn(value, id) }).
--   Flows (issue 14; in jobrt.client_flows, same two forms): q:enqueueFlow{ queue=, job=, args=,
--   opts=, children = {...} } -> id, tree; q:getFlow(queue, id); q:getFlowTree(queue, id).
--   deleteJob, retryFailedJobs and drain carry the flow news they wrote to the other queues
--   before they return (a deleted parent's pending children are gone by then).
--
-- Every call works both ways. With a trailing callback(err, value...) it returns at once and the
-- callback runs later in its own coroutine (err is nil on success). Without one it must run inside a
-- coroutine of the jobrt loop (every script, spec, handler and REPL line is one): it yields until
-- the answer and returns the value, or raises the error.
-- A wrong argument (bad type, unknown or malformed option) is a programming error: it raises at
-- once in both forms, naming the call and the option. What only Redis can tell (a queue without a
-- type, Redis down, a job that failed) goes to the callback, or is raised in the coroutine form.
--
-- Enqueue options: jobHash (string), priority (number; QUEUE and LBQUEUE), timestamp (absolute Unix seconds,
-- fractions allowed), delay (seconds), id (client id: 1-256 bytes, not all digits), retries (whole
-- number 0-1000), timeout (seconds a handler may run). q:run also takes wait (seconds to wait for
-- the result; default: no limit); on timeout it raises and the job stays queued.
-- Args are encoded by jobrt.json (its rules: exact numbers, [] for json.array tables, UTF-8 only)
-- with sorted keys, so equal tables give equal text (DELQUEUE's identity of jobs without a
-- jobHash is the function and the args text).
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local ops = require 'jobrt.ops'
local json = require 'jobrt.json'
local naming = require 'jobrt.names'

local type, select, pairs, ipairs, next, tostring, tonumber, error, pcall, xpcall, unpack =
  type, select, pairs, ipairs, next, tostring, tonumber, error, pcall, xpcall, unpack
local setmetatable, getmetatable, require = setmetatable, getmetatable, require
local str_format, floor, huge = string.format, math.floor, math.huge
local running, traceback = coroutine.running, debug.traceback
local sort, concat = table.sort, table.concat

local NULL = json.null
local QCONFIG = 'RESERVED:QCONFIG'

local _M = { null = NULL }
local Client = {}
local mt = { __index = Client }
_M.Client = Client

-- Where errors raised by callbacks go (the REPL prints them above its prompt).
function _M.report_error(msg)
  jobrt.log('error', '%s', msg)
end

-- Where warnings about a call go (stderr through the log; the REPL may redirect them).
function _M.report_warning(msg)
  jobrt.log('warn', '%s', msg)
end

local function tname(v)
  if v ~= v then return 'nan' end
  return type(v)
end

local function shown(v)
  if type(v) == 'string' then
    if #v > 40 then v = v:sub(1, 37) .. '...' end
    return "'" .. v .. "'"
  end
  return tostring(v)
end

-- ---- argument checks (raise at the caller's call site) ------------------

-- Argument errors carry no position (the traceback has it), so the message is the same in both
-- calling forms.
local function argfail(fname, msg)
  error(fname .. ': ' .. msg, 0)
end

local function check_queue(fname, queue)
  if type(queue) ~= 'string' or queue == '' then
    argfail(fname, 'queue must be a non-empty string, got ' .. (queue == '' and "''" or tname(queue)))
  end
  local err = naming.queue(queue)
  if err then argfail(fname, 'the queue name ' .. err) end
end

local function check_id(fname, id, what)
  what = what or 'id'
  if type(id) == 'number' then id = tostring(id) end
  if type(id) ~= 'string' or id == '' then
    argfail(fname, what .. ' must be a non-empty string, got ' .. (id == '' and "''" or tname(id)))
  end
  local err = naming.ref(id)
  if err then argfail(fname, what .. ' ' .. err) end
  return id
end

local OPTION_TYPES = { jobHash = 'string', priority = 'number', timestamp = 'number', delay = 'number',
                       id = 'string', retries = 'number', timeout = 'number' }
local OPTION_NAMES = 'jobHash, priority, timestamp, delay, id, retries, timeout'
_M.OPTION_TYPES = OPTION_TYPES

-- Checks the options of one job; returns a clean copy (jobHash as a string). Raises on the first
-- problem, naming the option. `extra` (optional) allows more options: name -> checker(v) -> msg|nil.
-- `where` prefixes messages for bulk calls ("jobs[3]: ").
local function check_options(fname, opts, extra, where)
  where = where or ''
  local function fail(msg) error(fname .. ': ' .. where .. msg, 0) end
  if opts == nil then return {} end
  if type(opts) ~= 'table' then fail('opts must be a table, got ' .. tname(opts)) end
  local out = {}
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if want == nil and extra and extra[k] then
      local msg = extra[k](v)
      if msg then fail(str_format("option '%s' %s", k, msg)) end
      out[k] = v
    elseif want == nil then
      local known = OPTION_NAMES
      if extra then
        local names = {}
        for name in pairs(extra) do names[#names + 1] = name end
        sort(names)
        known = known .. ', ' .. concat(names, ', ')
      end
      fail(str_format('unknown option %s (known: %s)', shown(k), known))
    else
      if k == 'jobHash' and type(v) == 'number' and v == v then v = tostring(v) end
      if type(v) ~= want or v ~= v then
        fail(str_format("option '%s' must be a %s, got %s", k, want, tname(v)))
      end
      if want == 'number' and (v == huge or v == -huge) then
        fail(str_format("option '%s' must be a finite number, got %s", k, tostring(v)))
      end
      if k == 'jobHash' and (v == '' or #v > 256) then
        fail(str_format("option 'jobHash' must be 1-256 bytes, got %d", #v))
      elseif k == 'jobHash' and naming.utf8(v) then
        fail("option 'jobHash' " .. naming.utf8(v))
      elseif k == 'id' then
        if v == '' or #v > 256 then fail(str_format("option 'id' must be 1-256 bytes, got %d", #v)) end
        local err = naming.id(v)
        if err then fail("option 'id' " .. err) end
      elseif k == 'priority' and (v < -1e15 or v > 1e15) then
        fail("option 'priority' must be between -1e15 and 1e15, got " .. tostring(v))
      elseif k == 'timestamp' then
        if v < 0 then fail("option 'timestamp' must be absolute Unix seconds (>= 0), got " .. tostring(v)) end
        if v > 1e11 then
          fail(str_format("option 'timestamp' must be Unix seconds, got %.0f (milliseconds? divide by 1000)", v))
        end
      elseif k == 'delay' and (v < 0 or v > 3.2e8) then
        fail("option 'delay' must be seconds from now (0 to 3.2e8), got " .. tostring(v))
      elseif k == 'retries' and (v < 0 or v > 1000 or v ~= floor(v)) then
        fail("option 'retries' must be a whole number from 0 to 1000, got " .. tostring(v))
      elseif k == 'timeout' and (v < 0.001 or v > 3.2e7) then
        fail(str_format("option 'timeout' must be seconds from 0.001 to 3.2e7 (about a year), got %.14g", v))
      end
      out[k] = v
    end
  end
  if out.timestamp and out.delay then
    fail("options 'timestamp' and 'delay' exclude each other: give one of them")
  end
  return out
end
_M.check_options = check_options

-- args as JSON text (keys sorted, at most the client's max_payload bytes); raises when they
-- cannot be encoded.
local function encode_args(self, fname, args, where)
  if args == nil then return '{}' end
  local text, err, code = json.encode(args, self.args_out)
  if not text then
    if code == 'ETOOBIG' then
      error(str_format('%s: %s%s (the connect option max_payload sets the limit)', fname, where or '', err), 0)
    end
    error(str_format('%s: %s%s', fname, where or '', err), 0)
  end
  return text
end

-- Job names are 1-256 bytes and do not start with '_': in a job file such keys are settings
-- of the queue (`_type`, see jobrt.queuetypes), so no job could serve them.
local function check_job(fname, job, where)
  if type(job) ~= 'string' or job == '' or #job > 256 then
    error(str_format('%s: %sjob must be a job name (a string of 1-256 bytes), got %s', fname, where or '',
      type(job) == 'string' and (job == '' and "''" or 'a string of ' .. #job .. ' bytes') or tname(job)), 0)
  end
  local err = naming.job(job)
  if err then error(str_format('%s: %sthe job name %s', fname, where or '', err), 0) end
  if job:sub(1, 1) == '_' then
    error(str_format("%s: %sjob names must not start with '_' (%s): in job files such keys are settings of the queue, like _type",
      fname, where or '', shown(job)), 0)
  end
end
_M.check_job = check_job

-- ---- the two calling forms ----------------------------------------------

-- The trailing callback, if any: the last non-nil argument when it is a function.
-- Returns callback|nil and the number of other arguments.
local function split_callback(...)
  local n = select('#', ...)
  while n > 0 and select(n, ...) == nil do n = n - 1 end
  if n > 0 and type((select(n, ...))) == 'function' then return (select(n, ...)), n - 1 end
  return nil, n
end
_M.split_callback = split_callback

-- the first n arguments (the callback after them left out)
local function take(n, ...)
  if n == 0 then return end
  return unpack({ ... }, 1, n)
end

local function pack(...) return { n = select('#', ...), ... } end

local function deliver(cb, ...)
  local ok, err = xpcall(cb, traceback, ...)
  if not ok then _M.report_error('callback failed: ' .. tostring(err)) end
end

-- Runs perform(...) the way the caller asked: callback -> in a new coroutine, returns at once;
-- none -> here (must be a coroutine), returning its values or raising its error.
-- perform raises its errors with error(msg, 0).
local function both_ways(fname, cb, perform, ...)
  if cb then
    local args, n = { ... }, select('#', ...)
    jobrt.spawn(function()
      coroutine.yield()          -- a bare yield: run on the next loop turn, so the callback
                                 -- never runs before the call has returned
      local r = pack(pcall(perform, unpack(args, 1, n)))
      if r[1] then
        deliver(cb, nil, unpack(r, 2, r.n))
      else
        deliver(cb, r[2])
      end
    end)
    return
  end
  if running() == nil then
    error(fname .. ': call it inside a coroutine (jobrt.spawn) or pass a callback(err, value)', 0)
  end
  return perform(...)
end

-- nil, err from a lower layer -> raise
local function check(v, err, ...)
  if v == nil and err ~= nil then error(err, 0) end
  return v, err, ...
end

-- ---- connecting -----------------------------------------------------------

-- A client on an open Redis connection r (from jobrt.redis.connect). Must run in a coroutine
-- (it loads the server scripts). conf: jobrt.ops.new's; max_payload: bytes (default 16 MiB).
-- Returns the client, or nil, err.
function _M.new(r, conf, max_payload)
  max_payload = max_payload or json.MAX_PAYLOAD
  local oconf = { max_payload = max_payload }
  for k, v in pairs(conf or {}) do oconf[k] = v end
  local o, err = ops.new(r, oconf)
  if not o then return nil, err end
  return setmetatable({ r = r, ops = o, subs = {}, waiters = {}, early = {}, closed = false, max_payload = max_payload,
                        args_out = { max_bytes = max_payload, sort = true, name = 'args' } }, mt)
end

-- Splits connect()'s argument into the connection's part and the client's max_payload.
-- Raises on a malformed max_payload.
local function split_conf(fname, conf)
  if type(conf) ~= 'table' or conf.max_payload == nil then return conf, nil end
  local ok, err = json.check_limit(conf.max_payload, fname .. ": option 'max_payload'")
  if not ok then error(err, 0) end
  local c = {}
  for k, v in pairs(conf) do if k ~= 'max_payload' then c[k] = v end end
  return c, conf.max_payload
end

-- The address a connect() argument points at, for messages and logs: host:port, the socket
-- path or the sentinels, never a password (jobrt.redis.describe); _M.masked(url) is the URL with
-- its passwords written *** (jobrt.redis.mask_url).
_M.describe = redis.describe
_M.masked = redis.mask_url

-- Connects and loads the scripts: client, or nil, message (without the "jobrt.connect: " part),
-- refused (true when nothing answered at the address). Must run in a coroutine. max_payload:
-- the client's limit (also read from conf.max_payload when conf is a table).
function _M.open(conf, max_payload)
  local c, limit = split_conf('jobrt.connect', conf)
  conf, max_payload = c, limit or max_payload
  if conf == nil and os.getenv('JOBRT_REDIS') == nil then
    -- no address: this directory's private Redis (./.jobrt/redis.sock) if any, else the default
    local problem
    conf, problem = require('jobrt.localredis').default_url()
    if not conf then return nil, problem end
  end
  local r, err, code = redis.connect(conf)
  if not r and type(conf) == 'string' and require('jobrt.localredis').is_local(conf) then
    return nil, require('jobrt.localredis').NOT_RUNNING    -- its socket is left from a kill or a reboot
  end
  if not r then
    err = tostring(err)
    -- "ECONNREFUSED: cannot connect to ..." reads better here without its code
    if code == 'ECONNREFUSED' and err:sub(1, #code + 2) == code .. ': ' then err = err:sub(#code + 3) end
    return nil, (err:gsub('^redis%.connect: ', '')), code == 'ECONNREFUSED'
  end
  local q, qerr = _M.new(r, nil, max_payload)
  if not q then
    r:close()
    return nil, tostring(qerr)
  end
  return q
end

local function do_connect(conf)
  local q, err, refused = _M.open(conf)
  if not q then
    if refused then
      err = err .. ' (is redis-server running there? pass another address, or set JOBRT_REDIS)'
    end
    error('jobrt.connect: ' .. err, 0)
  end
  return q
end

-- connect(url_or_table|nil[, callback]) -> client (raises), or returns at once with a callback.
function _M.connect(...)
  local cb, n = split_callback(...)
  local conf = take(n, ...)
  if n > 1 then error('jobrt.connect: expected (url_or_table[, callback]), got ' .. n .. ' arguments', 0) end
  if conf ~= nil and type(conf) ~= 'string' and type(conf) ~= 'table' then
    error('jobrt.connect: expected a redis URL string or a table {host=, port=, ...}, got ' .. tname(conf), 0)
  end
  split_conf('jobrt.connect', conf)         -- a malformed max_payload raises here, in both forms
  return both_ways('jobrt.connect', cb, do_connect, conf)
end

function Client:close()
  if self.closed then return end
  self.closed = true
  for _, list in pairs(self.waiters) do
    for w in pairs(list) do
      w.done, w.rec, w.err, w.code = true, nil, 'ECLOSED: the client was closed', 'ECLOSED'
      w.cond:broadcast(nil, 'ECLOSED: the client was closed', 'ECLOSED')
    end
  end
  self.waiters = {}
  self.r:close()
end

local function check_self(self, fname)
  if getmetatable(self) ~= mt then
    error(str_format("%s: call it with a colon, q:%s(...)", fname, fname), 0)
  end
  if self.closed then error(fname .. ': the client is closed', 0) end
end

-- ---- enqueue --------------------------------------------------------------

local function type_rules(fname, queue, qtype, o, where)
  where = where or ''
  if qtype == 'LBQUEUE' and not o.jobHash then
    return str_format("%s: %squeue '%s' is an LBQUEUE: give the option jobHash (jobs with the same jobHash are one entry)",
      fname, where, queue)
  end
  if o.priority and qtype == 'DELQUEUE' then
    return str_format("%s: %soption 'priority' applies to QUEUE and LBQUEUE queues only; queue '%s' is a DELQUEUE (its jobs run at their time)",
      fname, where, queue)
  end
  if (o.timestamp or o.delay) and qtype == 'LBQUEUE' then
    return str_format("%s: %soption '%s' applies to QUEUE and DELQUEUE queues only; queue '%s' is an LBQUEUE",
      fname, where, o.timestamp and 'timestamp' or 'delay', queue)
  end
end

-- one enqueue; returns id, existed (raises)
local function enqueue_one(self, fname, queue, job, args_json, o, where)
  local qtype, err = self.ops:queue_type(queue)
  if not qtype then error(fname .. ': ' .. tostring(err), 0) end
  local msg = type_rules(fname, queue, qtype, o, where)
  if msg then error(msg, 0) end
  local id, existed = self.ops:enqueue(queue, job, args_json, o)
  if not id then error(fname .. ': ' .. (where or '') .. tostring(existed), 0) end
  return id, existed
end

-- For the command line: one enqueue of JSON text already checked. Returns id, existed (raises).
_M.enqueue_one = enqueue_one
-- For the command line: the message when options do not fit the queue's type, or nil.
_M.type_rules = type_rules

-- enqueueJob answers the id alone (an id already waiting or running is answered as well: not enqueued twice)
local function enqueue_id(...)
  return (enqueue_one(...))
end

function Client:enqueueJob(...)
  check_self(self, 'enqueueJob')
  local cb, n = split_callback(...)
  if n > 4 then argfail('enqueueJob', 'expected (queue, job, args, opts[, callback]), got ' .. n .. ' arguments') end
  local queue, job, args, opts = take(n, ...)
  check_queue('enqueueJob', queue)
  check_job('enqueueJob', job)
  local o = check_options('enqueueJob', opts)
  local text = encode_args(self, 'enqueueJob', args)
  return both_ways('enqueueJob', cb, enqueue_id, self, 'enqueueJob', queue, job, text, o)
end

-- Many jobs: each checked against the queue's type here, the rest sent in bulk calls
-- (enqueue_bulk.lua: up to ops.BULK_MAX jobs and ops.BULK_BYTES of args each, all in flight at
-- once on the connection). A job the server refuses fails the call it travels in (nothing of
-- that call is written); the error names the job. Returns the ids in order (raises, saying how
-- many were not enqueued, when some were not).
local function enqueue_many(self, queue, items)
  local qtype, terr = self.ops:queue_type(queue)
  if not qtype then error('enqueueJobs: ' .. tostring(terr), 0) end
  local ids, errors, nerr = {}, {}, 0
  local chunks, cur, bytes = {}, nil, 0
  for i = 1, #items do
    local it = items[i]
    local msg = type_rules('enqueueJobs', queue, qtype, it.opts, str_format('jobs[%d]: ', i))
    if msg then
      errors[i] = msg
      nerr = nerr + 1
    else
      if not cur or #cur.jobs >= ops.BULK_MAX or bytes + #it.args > ops.BULK_BYTES then
        cur = { jobs = {}, index = {} }
        chunks[#chunks + 1] = cur
        bytes = 0
      end
      cur.jobs[#cur.jobs + 1] = { it.job, it.args, it.opts }
      cur.index[#cur.index + 1] = i
      bytes = bytes + #it.args
    end
  end
  local wg = jobrt.waitgroup()
  for _, c in ipairs(chunks) do
    wg:spawn(function()
      local got, err, at = self.ops:enqueue_bulk(queue, c.jobs)
      if got then
        for k = 1, #got do ids[c.index[k]] = got[k] end
      else
        local where = c.index[at or 1]
        for k = 1, #c.index do
          errors[c.index[k]] = str_format('enqueueJobs: jobs[%d]: %s', where, tostring(err))
        end
        nerr = nerr + #c.index
      end
    end)
  end
  wg:wait()
  if nerr > 0 then
    local first
    for i = 1, #items do if errors[i] then first = errors[i]; break end end
    error(str_format('enqueueJobs: %d of %d jobs were not enqueued; the first error: %s', nerr, #items,
      first:gsub('^enqueueJobs: ', '', 1)), 0)
  end
  return ids
end

-- jobs: an array of { job=, args=, opts= } (or { job, args, opts }). Returns the ids in order.
-- Every job is checked before anything is sent; then the calls go out in bulk (enqueue_many).
function Client:enqueueJobs(...)
  check_self(self, 'enqueueJobs')
  local cb, n = split_callback(...)
  if n > 2 then argfail('enqueueJobs', 'expected (queue, jobs[, callback]), got ' .. n .. ' arguments') end
  local queue, list = take(n, ...)
  check_queue('enqueueJobs', queue)
  if type(list) ~= 'table' then argfail('enqueueJobs', 'jobs must be an array of {job=, args=, opts=}, got ' .. tname(list)) end
  local items = {}
  for i = 1, #list do
    local it = list[i]
    local where = str_format('jobs[%d]: ', i)
    if type(it) ~= 'table' then
      argfail('enqueueJobs', where .. 'must be a table {job=, args=, opts=}, got ' .. tname(it))
    end
    local job, args, opts = it.job, it.args, it.opts
    if job == nil then job, args, opts = it[1], it[2], it[3] end
    check_job('enqueueJobs', job, where)
    items[i] = { job = job, opts = check_options('enqueueJobs', opts, nil, where),
                 args = encode_args(self, 'enqueueJobs', args, where) }
  end
  return both_ways('enqueueJobs', cb, enqueue_many, self, queue, items)
end

-- ---- results ----------------------------------------------------------------

local function decode_result(text)
  if text == nil or text == NULL or text == '' then return nil end
  local v = json.decode(text)
  if v == nil then return text end           -- not JSON (written by another tool): as it is
  if v == NULL then return nil end
  return v
end
_M.decode_result = decode_result

-- record_values(rec) -> rec: a job record (as getJob returns it) made for display, in place:
-- args and result-value become the JSON values they hold (`jobrt job`, `failed --json` and the
-- web API show records so); a field that is not JSON, written by another tool, stays the
-- string it is.
function _M.record_values(rec)
  for _, f in ipairs({ 'args', 'result-value' }) do
    local t = rec[f]
    if type(t) == 'string' then
      local v = json.decode(t)
      if v ~= nil then rec[f] = v end
    end
  end
  return rec
end

-- The outcome of a finished record: true, value | false, message.
local function outcome(queue, id, rec)
  if rec.result == 'successful' then return true, decode_result(rec['result-value']) end
  local reason = rec['error-reason']
  if reason == nil or reason == '' or reason == NULL then reason = 'failed' end
  local msg = str_format("job %s (%s) on queue '%s' failed: %s", id, tostring(rec['function']), queue, reason)
  local exc = rec['error-exception']
  if type(exc) == 'string' and exc ~= '' and exc ~= reason then msg = msg .. '\n' .. exc end
  return false, msg
end
_M.outcome = outcome

local function finished(rec)
  return rec and rec.state == 'finished' and (rec.result == 'successful' or rec.result == 'failed')
end

-- The fields of a finished record a waiter needs, read with one HMGET (not get.lua: that is an
-- EVALSHA and two commands more). A record with `cancelled` is one being deleted: as none.
local WAIT_FIELDS = { 'state', 'result', 'result-value', 'error-reason', 'error-exception', 'function', 'cancelled' }
local function read_outcome(self, queue, id)
  local v, err = self.r:call('HMGET', ops.keys(queue)[1] .. id, unpack(WAIT_FIELDS))
  if v == nil then return nil, err end
  if v[1] == NULL or v[7] ~= NULL then return false end
  local rec = {}
  for i = 1, 6 do if v[i] ~= NULL then rec[WAIT_FIELDS[i]] = v[i] end end
  return rec
end

-- Wakes the waiters of job `id` of queue when its record is finished (or gone).
local function check_waiters(self, queue, id)
  local key = ops.keys(queue)[1] .. id
  local list = self.waiters[key]
  if not list or next(list) == nil then return end
  local rec, err = read_outcome(self, queue, id)
  if rec == nil and err ~= nil then return end          -- Redis trouble: the next message retries
  if rec and not finished(rec) then return end
  list = self.waiters[key]
  if not list then return end
  self.waiters[key] = nil
  for w in pairs(list) do
    w.done, w.rec = true, rec or false          -- kept: the waiter may not be waiting yet
    w.cond:broadcast(rec or false)
  end
end

local note_early
-- Results that come before their waiter. A caller that enqueues and then waits subscribed to
-- the results first, so it need not read the record before waiting; but the job may finish (and
-- its message arrive) between the enqueue's reply and the waiter being set up. While such
-- enqueues are in flight on a queue (e.inflight), the keys of results nobody waits for are kept
-- in two generations of at most EARLY_MAX keys (dropped once no enqueue is in flight); a waiter
-- whose key is among them, or that saw two generations go by, reads the record once.
local EARLY_MAX = 4096
note_early = function(e, key)
  e.cur[key] = true
  e.n = e.n + 1
  if e.n >= EARLY_MAX then e.old, e.cur, e.n, e.gen = e.cur, {}, 0, e.gen + 1 end
end

-- Marks an enqueue-and-wait in flight on queue; returns the token early_done takes.
local function early_begin(self, queue)
  local e = self.early[queue]
  if not e then
    e = { inflight = 0, cur = {}, old = {}, n = 0, gen = 0 }
    self.early[queue] = e
  end
  e.inflight = e.inflight + 1
  return { e = e, gen = e.gen }
end

-- The waiter of key is set up (or the enqueue failed: key nil): true when its result may have
-- come before, so the record must be read once.
local function early_done(token, key)
  local e = token.e
  e.inflight = e.inflight - 1
  local missed = key ~= nil and (e.cur[key] or e.old[key] or e.gen - token.gen >= 2) or false
  if e.inflight == 0 then e.cur, e.old, e.n = {}, {}, 0 end
  return missed
end

-- Subscribes to the results channel of queue once per client.
local function ensure_results(self, queue)
  local s = self.subs[queue]
  if s == true then return end
  if s then                                             -- another coroutine is subscribing
    local ok, err = s:wait()
    if not ok then error(err, 0) end
    return
  end
  local c = jobrt.cond()
  self.subs[queue] = c
  local prefix = ops.keys(queue)[1]
  local ok, err = self.r:subscribe(ops.channels(queue).results, function(_, message)
    if message == nil then                              -- resubscribed: messages may be lost
      for key in pairs(self.waiters) do
        if key:sub(1, #prefix) == prefix then check_waiters(self, queue, key:sub(#prefix + 1)) end
      end
      return
    end
    local e = self.early[queue]
    for key in message:gmatch('[^\n]+') do
      if self.waiters[key] and key:sub(1, #prefix) == prefix then
        check_waiters(self, queue, key:sub(#prefix + 1))
      elseif e and e.inflight > 0 then
        note_early(e, key)
      end
    end
  end)
  if not ok then
    self.subs[queue] = nil
    c:broadcast(false, err)
    error('run: cannot subscribe to the results of queue ' .. shown(queue) .. ': ' .. tostring(err), 0)
  end
  self.subs[queue] = true
  c:broadcast(true)
end

-- Progress (job:progress): fns[record key] = { [fn] = true }, fed by one subscription per queue
-- to jobrt:{Q}:progress ("<record key>\n<value JSON>"). Returns a function that stops listening.
local function listen_progress(self, queue, id, fn)
  local key = ops.keys(queue)[1] .. id
  self.progress = self.progress or {}
  local list = self.progress[key] or {}
  self.progress[key] = list
  local last
  local function deliver_value(text)
    if text == last then return end
    last = text
    local ok, v = pcall(json.decode, text)
    local okc, err = xpcall(fn, traceback, ok and v or text, id)
    if not okc then _M.report_error('on_progress failed: ' .. tostring(err)) end
  end
  list[deliver_value] = true
  self.psubs = self.psubs or {}
  if not self.psubs[queue] then
    self.psubs[queue] = true
    local ok, err = self.r:subscribe(ops.channels(queue).progress, function(_, message)
      if message == nil then return end
      local k, v = message:match('^([^\n]*)\n(.*)$')
      local fns = k and self.progress[k]
      if fns then for f in pairs(fns) do f(v) end end
    end)
    if not ok then
      self.psubs[queue] = nil
      error('run: cannot subscribe to the progress of queue ' .. shown(queue) .. ': ' .. tostring(err), 0)
    end
  end
  -- a report made before we listened: the record has the latest one
  jobrt.spawn(function()
    local rec = self.ops:get(queue, id)
    if rec and type(rec.progress) == 'string' and list[deliver_value] then deliver_value(rec.progress) end
  end)
  return function()
    list[deliver_value] = nil
    if next(list) == nil and self.progress[key] == list then self.progress[key] = nil end
  end
end

-- Whether a live worker serves queue (the registry), remembered for SERVED_TTL seconds once it
-- does: a caller waiting on job after job asks the registry once, not for every job.
local SERVED_TTL = 5
local function served(self, queue)
  self.served = self.served or {}
  local until_ = self.served[queue]
  if until_ and jobrt.monotime() < until_ then return true end
  local ws = self.ops:workers()
  if not ws then return true end                        -- cannot tell: say nothing
  for _, wk in ipairs(ws) do
    for q in tostring(wk.queues or ''):gmatch('[^,]+') do
      if q == queue then
        self.served[queue] = jobrt.monotime() + SERVED_TTL
        return true
      end
    end
  end
  return false
end

-- Waits until job id of queue is finished; returns its record, false when it vanished.
-- Raises on timeout (wait seconds) or when the client closes. early: the token of early_begin,
-- taken before the enqueue (the caller subscribed to the results first): then the record is
-- read only when the result may have come before the waiter was set up.
local function wait_result(self, fname, queue, id, wait, early)
  local key = ops.keys(queue)[1] .. id
  local w = { cond = jobrt.cond() }
  local list = self.waiters[key]
  if not list then
    list = {}
    self.waiters[key] = list
  end
  list[w] = true
  -- a result published before we listened: read the record once
  if not early or early_done(early, key) then jobrt.spawn(check_waiters, self, queue, id) end
  -- waiting on a queue that nobody serves would be silent forever: say so at once (and wait)
  if not served(self, queue) then
    _M.report_warning(str_format("%s: no live worker serves queue '%s': job %s waits until one does (start one with  jobrt work PATH  whose job files define %s)",
      fname, queue, id, queue))
  end
  local ok, rec, err
  if w.done then ok, rec, err = true, w.rec, w.err else ok, rec, err = w.cond:wait(wait) end
  if self.waiters[key] then
    self.waiters[key][w] = nil
    if next(self.waiters[key]) == nil then self.waiters[key] = nil end
  end
  if ok == false then
    local cur = self.ops:get(queue, id)
    -- a job due later waits for its time, not for a worker: say when (the record's due, Unix s)
    local due = cur and cur.state == 'pending' and tonumber(cur.due)
    local now = jobrt.now()
    if due and due > now then
      error(str_format("%s: job %s on queue '%s' did not finish within %g s: it is delayed, due at %s (in %s s); the job stays queued",
        fname, id, queue, wait, os.date('!%Y-%m-%d %H:%M:%SZ', math.floor(due)),
        str_format('%.0f', math.max(1, math.ceil(due - now)))), 0)
    end
    error(str_format("%s: job %s on queue '%s' did not finish within %g s (state: %s; is a worker serving '%s'? the job stays queued)",
      fname, id, queue, wait, cur and cur.state or 'unknown', queue), 0)
  end
  if rec == nil then error(fname .. ': ' .. tostring(err), 0) end
  return rec
end

-- Enqueues one job for a caller that waits for its result: subscribed to the results first, a
-- result that comes before the waiter is set up is caught (early_begin), and progress reports
-- go to on_progress (optional). Returns the early token, id, existed and the function that stops
-- listening to progress (nil without on_progress); raises, having undone what it began.
local function enqueue_for_wait(self, fname, queue, job, text, o, on_progress)
  ensure_results(self, queue)
  local early = early_begin(self, queue)
  local oke, id, existed = pcall(enqueue_one, self, fname, queue, job, text, o)
  if not oke then
    early_done(early, nil)
    error(id, 0)
  end
  local okl, unlisten = true, nil
  if on_progress then okl, unlisten = pcall(listen_progress, self, queue, id, on_progress) end
  if not okl then
    early_done(early, nil)
    error(unlisten, 0)
  end
  return early, id, existed, unlisten
end

local function run_one(self, queue, job, text, o, wait, on_progress)
  local early, id, _, unlisten = enqueue_for_wait(self, 'run', queue, job, text, o, on_progress)
  local okw, rec = pcall(wait_result, self, 'run', queue, id, wait, early)
  if unlisten then unlisten() end
  if not okw then error(rec, 0) end
  if rec == false then
    error(str_format("run: job %s on queue '%s' was deleted before it finished", id, queue), 0)
  end
  local ok, v = outcome(queue, id, rec)
  if not ok then error(v, 0) end
  return v, id
end

local RUN_EXTRA = {
  wait = function(v)
    if type(v) ~= 'number' or v ~= v then return 'must be a number of seconds, got ' .. tname(v) end
    if v <= 0 then return 'must be seconds > 0, got ' .. tostring(v) end
  end,
  on_progress = function(v)
    if type(v) ~= 'function' then return 'must be a function(value, id) called with each progress report, got ' .. tname(v) end
  end,
}

-- For the command line: enqueue JSON text and wait for the job. Returns id, record (false when
-- the job vanished); raises on Redis trouble or after `wait` seconds. on_enqueued(id, existed),
-- when given, is called once the job is enqueued, before the wait; on_progress(value, id), when
-- given, with each progress report of the job (job:progress) while it is waited for.
function _M.enqueue_and_wait(self, fname, queue, job, text, o, wait, on_enqueued, on_progress)
  local early, id, existed, unlisten = enqueue_for_wait(self, fname, queue, job, text, o, on_progress)
  local okc, cerr = true, nil
  if on_enqueued then okc, cerr = pcall(on_enqueued, id, existed) end
  if not okc then
    early_done(early, nil)
    if unlisten then unlisten() end
    error(cerr, 0)
  end
  local ok, rec = pcall(wait_result, self, fname, queue, id, wait, early)
  if unlisten then unlisten() end
  if not ok then error(rec, 0) end
  return id, rec
end

-- For the command line: waits for job id (enqueued already, e.g. the root of a flow). Returns
-- its record (false when it vanished); raises on Redis trouble or after `wait` seconds.
function _M.wait_record(self, fname, queue, id, wait)
  ensure_results(self, queue)
  return wait_result(self, fname, queue, id, wait)
end

-- run(queue, job, args, opts) -> value, id: enqueues and waits for the result (seed 001).
function Client:run(...)
  check_self(self, 'run')
  local cb, n = split_callback(...)
  if n > 4 then argfail('run', 'expected (queue, job, args, opts[, callback]), got ' .. n .. ' arguments') end
  local queue, job, args, opts = take(n, ...)
  check_queue('run', queue)
  check_job('run', job)
  local o = check_options('run', opts, RUN_EXTRA)
  local wait, on_progress = o.wait, o.on_progress
  o.wait, o.on_progress = nil, nil
  local text = encode_args(self, 'run', args)
  return both_ways('run', cb, run_one, self, queue, job, text, o, wait, on_progress)
end

-- waitJob(queue, id[, wait]) -> value: waits for a job enqueued earlier (raises if it failed).
local function wait_one(self, queue, id, wait)
  ensure_results(self, queue)
  local rec = wait_result(self, 'waitJob', queue, id, wait)
  if rec == false then error(str_format("waitJob: no job %s on queue '%s'", id, queue), 0) end
  local ok, v = outcome(queue, id, rec)
  if not ok then error(v, 0) end
  return v
end

function Client:waitJob(...)
  check_self(self, 'waitJob')
  local cb, n = split_callback(...)
  if n > 3 then argfail('waitJob', 'expected (queue, id[, wait][, callback]), got ' .. n .. ' arguments') end
  local queue, id, wait = take(n, ...)
  check_queue('waitJob', queue)
  id = check_id('waitJob', id)
  if wait ~= nil then
    local msg = RUN_EXTRA.wait(wait)
    if msg then argfail('waitJob', 'wait ' .. msg) end
  end
  return both_ways('waitJob', cb, wait_one, self, queue, id, wait)
end

-- ---- inspect and repair ----------------------------------------------------

-- calls ops method `m` on queue; raises "fname: err"
local function op(self, fname, m, queue, ...)
  local v, second = self.ops[m](self.ops, queue, ...)
  if v == nil and second ~= nil then error(fname .. ': ' .. tostring(second), 0) end
  return v, second
end

-- After a call that may have written flow news (delete, drain, retry of failed jobs), carry
-- them over to the other queues now (jobrt.flows): so a deleted parent's pending children are
-- gone when deleteJob returns. On trouble the queue's workers carry them later.
local function carry_after(self, queue)
  local ok, err = require('jobrt.flows').carry(self.ops, queue, { fresh = true })
  if not ok then
    _M.report_warning(str_format("queue '%s': could not carry over its flow news now (%s): its workers do it later",
      queue, tostring(err)))
  end
end
_M.carry_after = carry_after

-- op, then carry_after
local function op_carry(self, fname, m, queue, ...)
  local v, second = op(self, fname, m, queue, ...)
  carry_after(self, queue)
  return v, second
end

local function simple(fname, m, nargs, idarg, carry)
  Client[fname] = function(self, ...)
    check_self(self, fname)
    local cb, n = split_callback(...)
    if n > nargs then
      argfail(fname, str_format('expected %d argument%s and an optional callback, got %d', nargs,
        nargs == 1 and '' or 's', n))
    end
    local queue, id = take(n, ...)
    check_queue(fname, queue)
    if idarg then id = check_id(fname, id) end
    return both_ways(fname, cb, carry and op_carry or op, self, fname, m, queue, id)
  end
end

simple('getJob', 'get', 2, true)
simple('deleteJob', 'delete', 2, true, true)
simple('retryFailedJobs', 'retry_failed', 1, false, true)
-- retryFailedJob(queue, id) -> true, or false when the job is not in the failed set
simple('retryFailedJob', 'retry_failed_job', 2, true, true)
simple('deleteFailedJobs', 'delete_failed', 1)
-- requeueExpired(queue) -> n_requeued, n_failed: take back jobs whose lease ran out now
-- (workers do this by themselves; seed 003 calls it forceFlushStaleJobs).
simple('requeueExpired', 'requeue_expired', 1)
Client.forceFlushStaleJobs = Client.requeueExpired

function Client:listFailedJobs(...)
  check_self(self, 'listFailedJobs')
  local cb, n = split_callback(...)
  if n > 3 then argfail('listFailedJobs', 'expected (queue[, offset, count][, callback]), got ' .. n .. ' arguments') end
  local queue, offset, count = take(n, ...)
  check_queue('listFailedJobs', queue)
  if offset ~= nil and (type(offset) ~= 'number' or offset < 0 or offset ~= floor(offset)) then
    argfail('listFailedJobs', 'offset must be a whole number >= 0, got ' .. shown(offset))
  end
  if count ~= nil and (type(count) ~= 'number' or count < 1 or count ~= floor(count)) then
    argfail('listFailedJobs', 'count must be a whole number >= 1, got ' .. shown(count))
  end
  return both_ways('listFailedJobs', cb, op, self, 'listFailedJobs', 'list_failed', queue, offset, count)
end

-- every queue named in RESERVED:QCONFIG, sorted
local function all_queues(self, fname)
  local flat = check(self.r:call('HGETALL', QCONFIG))
  if type(flat) ~= 'table' then error(fname .. ': unexpected reply to HGETALL ' .. QCONFIG, 0) end
  local names, types = {}, {}
  for i = 1, #flat, 2 do
    names[#names + 1] = flat[i]
    types[flat[i]] = flat[i + 1]
  end
  sort(names)
  return names, types
end

-- queueNames() -> the names of every queue in RESERVED:QCONFIG, sorted (the REPL completes them)
function Client:queueNames(...)
  check_self(self, 'queueNames')
  local cb, n = split_callback(...)
  if n > 0 then argfail('queueNames', 'expected ([callback]), got ' .. n .. ' arguments') end
  return both_ways('queueNames', cb, function() return (all_queues(self, 'queueNames')) end)
end

local COUNT_FIELDS = { 'pending', 'delayed', 'parked', 'executing', 'failed', 'completed',
                       'total_failed', 'retried', 'expired' }
_M.COUNT_FIELDS = COUNT_FIELDS

local function stats_one(self, queue)
  local s = op(self, 'stats', 'stats', queue)
  local t = {}
  for k, v in pairs(s) do t[k] = tonumber(v) or v end
  t.type = self.ops:queue_type(queue)
  return t
end

local function stats_perform(self, queue)
  if queue then return stats_one(self, queue) end
  local names, types = all_queues(self, 'stats')
  local out = {}
  local wg = jobrt.waitgroup()
  for _, name in ipairs(names) do
    if ops.TYPES[types[name]] then
      wg:spawn(function()
        local ok, t = pcall(stats_one, self, name)
        out[name] = ok and t or { type = types[name], error = t }
      end)
    else
      out[name] = { type = types[name], error = str_format("stats: queue '%s' has unknown type '%s' in %s: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
        name, tostring(types[name]), QCONFIG, name) }
    end
  end
  wg:wait()
  return out
end

-- stats(queue) -> counts of that queue; stats() -> { [queue] = counts } for every typed queue.
function Client:stats(...)
  check_self(self, 'stats')
  local cb, n = split_callback(...)
  if n > 1 then argfail('stats', 'expected ([queue][, callback]), got ' .. n .. ' arguments') end
  local queue = take(n, ...)
  if queue ~= nil then check_queue('stats', queue) end
  return both_ways('stats', cb, stats_perform, self, queue)
end

-- The worker registry (the worker keeps it, lua-server-scripts/register.lua): zset
-- jobrt:{workers} of ids by expiry, hash jobrt:{workers}:<id> (id, host, pid, queues, started,
-- heartbeat, done, failed, inflight, concurrency) that expires when the worker stops beating.
_M.WORKERS_KEY = ops.WORKERS_KEY
_M.WORKER_PREFIX = ops.WORKER_PREFIX

local function workers_perform(self)
  return check(self.ops:workers())
end

function Client:workers(...)
  check_self(self, 'workers')
  local cb, n = split_callback(...)
  if n > 0 then argfail('workers', 'expected ([callback]), got ' .. n .. ' arguments') end
  return both_ways('workers', cb, workers_perform, self)
end

local function qtype_perform(self, queue, qtype)
  if qtype then
    local ok, err = self.ops:set_queue_type(queue, qtype)
    if not ok then error('queueType: ' .. tostring(err), 0) end
    return qtype
  end
  local v = check(self.r:call('HGET', QCONFIG, queue))
  if v == NULL then return nil end
  return v
end

-- queueType(queue) -> type | nil;  queueType(queue, type) -> type
function Client:queueType(...)
  check_self(self, 'queueType')
  local cb, n = split_callback(...)
  if n > 2 then argfail('queueType', 'expected (queue[, type][, callback]), got ' .. n .. ' arguments') end
  local queue, qtype = take(n, ...)
  check_queue('queueType', queue)
  if qtype ~= nil and (type(qtype) ~= 'string' or not ops.TYPES[qtype]) then
    argfail('queueType', str_format('unknown queue type %s: use QUEUE, LBQUEUE or DELQUEUE', shown(qtype)))
  end
  return both_ways('queueType', cb, qtype_perform, self, queue, qtype)
end

-- ---- serving --------------------------------------------------------------

local function register_perform(self, conf, desc, opts)
  local okw, worker = pcall(require, 'jobrt.worker')
  if not okw or type(worker) ~= 'table' or type(worker.register) ~= 'function' then
    error('registerWorker: this build has no worker (jobrt.worker.register): ' .. tostring(worker), 0)
  end
  -- the worker makes its own connection from a config, or shares this client's
  local w, err = worker.register(conf ~= nil and conf or self.r, desc, opts)
  if w == nil and err ~= nil then error('registerWorker: ' .. tostring(err), 0) end
  return w
end

-- registerWorker(redisConfig|nil, jobDescription[, opts]) -> worker: serve jobDescription's queues
-- from this process (seed 000) until w:stop(). redisConfig nil: this client's connection.
-- opts: those of jobrt.worker.new (concurrency, lease, grace, ...).
function Client:registerWorker(...)
  check_self(self, 'registerWorker')
  local cb, n = split_callback(...)
  if n > 3 then argfail('registerWorker', 'expected (redisConfig, jobDescription[, opts][, callback]), got ' .. n .. ' arguments') end
  local conf, desc, opts = take(n, ...)
  if conf ~= nil and type(conf) ~= 'string' and type(conf) ~= 'table' then
    argfail('registerWorker', 'redisConfig must be a URL string, a table {host=, port=} or nil, got ' .. tname(conf))
  end
  if type(desc) ~= 'table' then
    argfail('registerWorker', 'jobDescription must be a table { QUEUE = { job = function(args, job) ... end } }, got ' .. tname(desc))
  end
  if opts ~= nil and type(opts) ~= 'table' then argfail('registerWorker', 'opts must be a table, got ' .. tname(opts)) end
  return both_ways('registerWorker', cb, register_perform, self, conf, desc, opts)
end

-- Scheduling, flow control and maintenance live in jobrt.client_sched; it adds its methods to
-- Client with the same two calling forms, through these internals.
require('jobrt.client_sched').install(Client, {
  both_ways = both_ways, split_callback = split_callback, take = take, argfail = argfail,
  check_self = check_self, check_queue = check_queue, check_job = check_job, encode_args = encode_args,
  check = check, op = op, all_queues = all_queues, stats_perform = stats_perform, tname = tname,
  shown = shown, QCONFIG = QCONFIG, module = _M,
})
-- Flows (q:enqueueFlow, q:getFlow, q:getFlowTree) live in jobrt.client_flows.
require('jobrt.client_flows').install(Client, {
  both_ways = both_ways, split_callback = split_callback, take = take, argfail = argfail,
  check_self = check_self, check_queue = check_queue, check_job = check_job, encode_args = encode_args,
  check = check, tname = tname, shown = shown, module = _M,
})

function mt.__tostring(self)
  local info = (not self.closed) and self.r:info() or nil
  return str_format('jobrt client (%s%s)', info and info.addr or 'closed', info and ', ' .. info.state or '')
end

return _M
