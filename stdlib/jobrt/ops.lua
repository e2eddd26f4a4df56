-- jobrt.ops: the queue operations, one call to one server-side script each
-- (lua-server-scripts/*.lua; the protocol is lua-server-scripts/README.md).
--
--   local ops = require 'jobrt.ops'
--   local o, err = ops.new(r [, conf])         -- r from jobrt.redis.connect; loads the scripts
--       -- conf (all optional): ttl_ok (s, 3600), ttl_failed (s, 604800), backoff (s, 1: first
--       -- retry delay, doubled per failure, capped at 1 h), max_stalls (2: lease losses in a row
--       -- a job survives; they use up no retries), type_ttl (s, 2: how long queue types are cached),
--       -- max_payload (bytes, 16 MiB: the largest args the enqueue script accepts from us)
--   o:queue_type(queue) -> type | nil, err      -- from RESERVED:QCONFIG (cached briefly)
--   o:set_queue_type(queue, type) -> true | nil, err
--   o:enqueue(queue, fn_name, args_json, opts) -> id, existed | nil, err
--   o:enqueue_bulk(queue, { {fn_name, args_json, opts}... }) -> ids, existed (arrays) | nil, err, index
--       -- 1..ops.BULK_MAX jobs in one call (enqueue_bulk.lua), checked before any is written
--       -- opts: jobHash, priority, timestamp (absolute Unix s), delay (s), id, retries, timeout (s)
--       -- existed: true when no new job was made (id already pending/executing, LBQUEUE merge,
--       -- DELQUEUE identical job at the same timestamp); id is then the existing job's id
--   A lease belongs to one attempt of one job of one queue: the calls that act on leases take
--   `leases`, an array of { id = string, attempt = number }, and a renewal, outcome or release
--   for any other attempt of the job finds nothing (lua-server-scripts/README.md, "Leases").
--   o:reserve(queue, worker_id, n, lease_s[, alone]) -> { jobs = { {id=, fn=, args=(JSON text),
--       attempt=, retries=, timeout=, hash=, fence=, alone=(boolean)}... }, next_due = ms|nil,
--       next_lease = ms|nil, now = ms, blocked = boolean }
--       -- alone: the worker runs nothing now and may take a job that must run by itself (one
--       -- taken back from a worker that stopped renewing); such a job comes as the only one,
--       -- with alone=true. blocked: such a job is next and alone was not given: run nothing
--       -- new until idle, then reserve with alone. fence: the fencing token of the lease
--       -- (grows with every lease of the queue). held: nil, or why fewer jobs came than asked
--       -- for (flow control): 'paused' and 'max-active' (reserve again on a wake-up), 'rate'
--       -- (reserve again at retry_at, server Unix ms). more: the call filled its count from the
--       -- queue, which may hold more ready jobs (false: it had no more; an enqueue that makes one
--       -- ready publishes a wake-up)
--   o:renew(queue, worker_id, leases, lease_s) -> lost leases ({ {id=, attempt=}... })
--       -- lost: leases taken back (the job may run elsewhere: stop it now), or jobs deleted
--       -- while executing (stop them; complete or release still frees their claims at once)
--   o:complete(queue, worker_id, outcomes) -> { completed=, retried=, failed=, ignored={ids},
--       cancelled={ids}, flows=n|nil } | nil, err
--       -- ignored: ids whose lease (that attempt's) the worker no longer held; cancelled: ids
--       -- deleted while they ran (their records are now gone, counted neither completed nor
--       -- failed); flows: news for parents written to the queue's flow outbox (present when
--       -- some were: carry them over, jobrt.flows)
--       -- outcomes: { {id=, attempt=, ok=true, value=json_text}, {id=, attempt=, ok=false,
--       --             reason=, exception=, retries=(used when the job has none)}... }, any
--       --             number (sent 1000 per call)
--   o:requeue_expired(queue) -> n_requeued, n_failed, n_cancelled, n_flow_entries|nil
--       -- n_failed: poison jobs (lease lost more than max_stalls times in a row);
--       -- n_cancelled: expired leases of jobs deleted while executing (records removed)
--   o:release(queue, worker_id, leases) -> n_released
--   o:get(queue, id) -> record table (field -> string) | nil (not found)
--   o:delete(queue, id) -> true | false
--       -- an executing job is cancelled: 'cancel:<id>' on the wake channel, record kept (get
--       -- answers nil) until its worker reports it or its lease runs out; true again meanwhile
--   o:retry_failed(queue) -> n ;  o:delete_failed(queue) -> n
--   o:retry_failed_job(queue, id) -> true | false (not in the failed set)
--   o:list_failed(queue, offset, count) -> records, total
--   o:stats(queue) -> { pending=, delayed=, parked=, executing=, failed=, completed=,
--                       total_failed=, retried=, expired=, cancelled=, dropped=, ...,
--                       waiting_children= (parents waiting for their children: flows) }
--   o:register(worker_id, ttl_s, info) -> workers alive  (heartbeat: registry hash + expiry)
--   o:unregister(worker_id) -> true;  o:workers() -> records of the workers alive, by id
--       -- keys jobrt:{workers} (zset id -> expiry ms) and jobrt:{workers}:<id> (hash)
--   ops.keys(queue) -> the standard KEYS list;  ops.channels(queue) -> { wake=, results=, progress= }
--   ops.flow_keys(queue) -> the 14 standard KEYS and the 4 flow keys (lua-server-scripts/README.md
--       "Keys"); ops.script_keys(name, queue) -> the KEYS script `name` takes; ops.FLOW_SCRIPTS
--   Flows (lua-server-scripts/README.md "Flows"; jobrt.flows carries news between queues):
--   o:flow_deliver(queue, entries) -> statuses, written    entries: { {key=, text=}... }
--   o:flow_take(queue, limit, horizon_ms, hold_ms) -> { now=, next=, entries = { {key=, text=, stamp=}... } }
--   o:flow_ack(queue, acks) -> n    acks: { {key=, stamp=}... }
--   o:children(queue, id) -> { {queue=, id=, state=, value= text, ignore=, index=}... } (a parent's children)
--   Scheduling and flow control (lua-server-scripts/README.md "Flow control", "Cron"):
--   o:pause(queue) -> changed ;  o:resume(queue) -> changed        (boolean: false = already so)
--   o:limit(queue[, set]) -> { rate_max=, rate_per=, max_active=, paused= } (0: none)
--       -- set (optional): { rate = { n, per_seconds } | false, max_active = n | false }; false
--       -- removes that limit, nil leaves it; without set only reads
--   o:progress(queue, worker_id, id, attempt, value_json) -> true | false (lease not held)
--   o:postpone(queue, worker_id, items) -> n_postponed
--       -- items: { {id=, attempt=, delay=seconds, reason=text|nil}... }: back to the due set
--       -- after delay without using up a retry (job:retry_later)
--   o:drain(queue) -> n_removed   (waiting, delayed and parked jobs; running and failed stay)
--   o:cron_set(queue, name, entry) -> 0 unchanged | 1 created | 2 replaced (restarts now) |
--       3 replaced (same schedule)   entry: a table, sent as JSON (see cron_set.lua)
--   o:cron_delete(queue, name[, source]) -> true | false
--   o:cron_entries(queue) -> { [name] = { entry = table, last = ms|nil } }
--   o:enqueue_tick(queue, name, tick_ms, skip_late_ms|nil, fn_name, args_json, opts)
--       -> id, 'new' | 'existed' | 'taken' | 'gone' | 'skipped'   (once per tick: see enqueue.lua)
--   ops.TYPES = { QUEUE=true, LBQUEUE=true, DELQUEUE=true }
-- Every operation returns nil, err on Redis trouble (never raises for it) and raises on wrong
-- argument types. Calls yield: run them inside a coroutine of the jobrt loop.

local scripts = require 'jobrt.scripts'
local json = require 'jobrt.json'
local naming = require 'jobrt.names'

local _M = {}
local mt = { __index = _M }

local type, error, tostring, tonumber, pairs, setmetatable = type, error, tostring, tonumber, pairs, setmetatable
local math_floor, math_abs = math.floor, math.abs
local str_format, str_find = string.format, string.find
local NULL = json.null

_M.TYPES = { QUEUE = true, LBQUEUE = true, DELQUEUE = true }
local QCONFIG = 'RESERVED:QCONFIG'

local SUFFIX = { 'job:', 'wait', 'ready', 'due', 'active', 'failed', 'lb:entry', 'lb:running',
                 'lb:parked', 'dedup', 'stats', 'seq', 'wake', 'results' }

local function check_queue(fname, queue)
  if type(queue) ~= 'string' or queue == '' then
    error(str_format("jobrt.ops.%s: queue must be a non-empty string, got %s", fname,
      type(queue) == 'string' and "''" or type(queue)), 3)
  end
  local err = naming.queue(queue)
  if err then error(str_format("jobrt.ops.%s: the queue name %s", fname, err), 3) end
end

-- The KEYS lists made so far, by queue name. A process that meets many queue names (jobrt web
-- with names from URLs) must not keep them all: the cache starts again once it holds
-- KEYS_CACHE_MAX queues.
local keys_cache, keys_cached = {}, 0
local KEYS_CACHE_MAX = 256
_M.KEYS_CACHE_MAX = KEYS_CACHE_MAX

-- The 14 standard KEYS of a queue, in the order every script expects.
function _M.keys(queue)
  local k = keys_cache[queue]
  if k then return k end
  check_queue('keys', queue)
  k = {}
  local prefix = 'jobrt:{' .. queue .. '}:'
  for i = 1, #SUFFIX do k[i] = prefix .. SUFFIX[i] end
  if keys_cached >= KEYS_CACHE_MAX then keys_cache, keys_cached = {}, 0 end
  keys_cache[queue] = k
  keys_cached = keys_cached + 1
  return k
end

-- How many queues' KEYS lists are cached (for tests).
function _M.keys_cached() return keys_cached end

-- Flows (lua-server-scripts/README.md "Flows"): the scripts that take the 4 flow keys of the
-- queue after the 14 standard ones.
local FLOW_SUFFIX = { 'flow', 'flow:out', 'flow:waiting', 'children:' }
_M.FLOW_SCRIPTS = { complete = true, requeue_expired = true, delete = true, drain = true, retry_failed = true,
                    flow_deliver = true, flow_take = true, flow_ack = true }
local flow_keys_cache, flow_keys_cached = {}, 0

-- The 14 standard KEYS of a queue and its 4 flow keys, in the order the flow scripts expect.
function _M.flow_keys(queue)
  local k = flow_keys_cache[queue]
  if k then return k end
  local std = _M.keys(queue)
  k = {}
  for i = 1, #std do k[i] = std[i] end
  local prefix = 'jobrt:{' .. queue .. '}:'
  for i = 1, #FLOW_SUFFIX do k[#std + i] = prefix .. FLOW_SUFFIX[i] end
  if flow_keys_cached >= KEYS_CACHE_MAX then flow_keys_cache, flow_keys_cached = {}, 0 end
  flow_keys_cache[queue] = k
  flow_keys_cached = flow_keys_cached + 1
  return k
end

-- The KEYS script `name` takes for queue (progress: see _M:progress).
function _M.script_keys(name, queue)
  if _M.FLOW_SCRIPTS[name] then return _M.flow_keys(queue) end
  return _M.keys(queue)
end

-- The pub/sub channels of a queue.
function _M.channels(queue)
  check_queue('channels', queue)
  return { wake = 'jobrt:{' .. queue .. '}:wake', results = 'jobrt:{' .. queue .. '}:results',
           progress = 'jobrt:{' .. queue .. '}:progress' }
end

-- a number as ARGV text: whole numbers without exponent, others with full precision
local function num(v)
  if v == math_floor(v) and math_abs(v) < 2 ^ 53 then return str_format('%d', v) end
  return str_format('%.17g', v)
end

local function clock()
  local jr = package.loaded['jobrt']
  if type(jr) == 'table' and type(jr.now) == 'function' then return jr.now() end
  return os.time()
end

local function nonnull(v)
  if v == nil or v == NULL then return nil end
  return v
end

-- Creates the operations object for connection r and loads the scripts. Returns o or nil, err.
function _M.new(r, conf)
  if conf ~= nil and type(conf) ~= 'table' then error('jobrt.ops.new: conf must be a table, got ' .. type(conf), 2) end
  conf = conf or {}
  for _, k in pairs({ 'ttl_ok', 'ttl_failed', 'backoff', 'max_stalls', 'type_ttl', 'max_payload' }) do
    if conf[k] ~= nil and type(conf[k]) ~= 'number' then
      error(str_format('jobrt.ops.new: conf.%s must be a number, got %s', k, type(conf[k])), 2)
    end
  end
  local s, err, code = scripts.load(r)
  if not s then return nil, err, code end
  return setmetatable({
    r = r, s = s, types = {}, ntypes = 0,
    ttl_ok = conf.ttl_ok and num(conf.ttl_ok) or '',
    ttl_failed = conf.ttl_failed and num(conf.ttl_failed) or '',
    backoff = conf.backoff and num(conf.backoff) or '',
    max_stalls = conf.max_stalls and num(conf.max_stalls) or '',
    type_ttl = conf.type_ttl or 2,
    max_payload = conf.max_payload and num(conf.max_payload) or '',
  }, mt)
end

local function type_missing(queue)
  return str_format("queue '%s' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
    queue, queue)
end

-- Remembers a queue's type for type_ttl seconds; at most KEYS_CACHE_MAX queues are kept.
local function cache_type(self, queue, qtype, t)
  if not self.types[queue] then
    if self.ntypes >= KEYS_CACHE_MAX then self.types, self.ntypes = {}, 0 end
    self.ntypes = self.ntypes + 1
  end
  self.types[queue] = { type = qtype, until_ = t + self.type_ttl }
end

-- The queue's type from RESERVED:QCONFIG, cached for conf.type_ttl seconds.
function _M:queue_type(queue)
  check_queue('queue_type', queue)
  local c = self.types[queue]
  local t = clock()
  if c and t < c.until_ then return c.type end
  local v, err, code = self.r:call('HGET', QCONFIG, queue)
  if v == nil then return nil, err, code end
  if v == NULL then return nil, type_missing(queue) end
  if not _M.TYPES[v] then
    return nil, str_format("queue '%s' has unknown type '%s' in RESERVED:QCONFIG: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
      queue, tostring(v), queue)
  end
  cache_type(self, queue, v, t)
  return v
end

-- Sets the queue's type in RESERVED:QCONFIG. Returns true or nil, err.
function _M:set_queue_type(queue, qtype)
  check_queue('set_queue_type', queue)
  if type(qtype) ~= 'string' then error('jobrt.ops.set_queue_type: type must be a string, got ' .. type(qtype), 2) end
  if not _M.TYPES[qtype] then
    return nil, str_format("unknown queue type '%s': use QUEUE, LBQUEUE or DELQUEUE", qtype)
  end
  local ok, err, code = self.r:call('HSET', QCONFIG, queue, qtype)
  if ok == nil then return nil, err, code end
  cache_type(self, queue, qtype, clock())
  return true
end

-- run script `name` on queue with argv (argv[1], the type, is filled in here)
local function run(self, name, queue, argv, keys)
  local qtype, err, code = self:queue_type(queue)
  if not qtype then return nil, err, code end
  argv[1] = qtype
  return self.s:call(name, keys or _M.script_keys(name, queue), argv)
end

local OPT_TYPES = { jobHash = 'string', priority = 'number', timestamp = 'number', delay = 'number',
                    id = 'string', retries = 'number', timeout = 'number' }

local TICK = { [0] = 'new', [1] = 'existed', [2] = 'taken', [3] = 'gone', [4] = 'skipped' }

function _M:enqueue(queue, fn_name, args_json, opts, tick)
  check_queue('enqueue', queue)
  if type(fn_name) ~= 'string' then error('jobrt.ops.enqueue: job name must be a string, got ' .. type(fn_name), 2) end
  if type(args_json) ~= 'string' then error('jobrt.ops.enqueue: args must be JSON text (a string), got ' .. type(args_json), 2) end
  if opts ~= nil and type(opts) ~= 'table' then error('jobrt.ops.enqueue: opts must be a table, got ' .. type(opts), 2) end
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPT_TYPES[k]
    if not want then
      error(str_format("jobrt.ops.enqueue: unknown option '%s' (known: jobHash, priority, timestamp, delay, id, retries, timeout)", tostring(k)), 2)
    end
    if k == 'jobHash' and type(v) == 'number' then v = num(v) end
    if type(v) ~= want then
      error(str_format('jobrt.ops.enqueue: option %s must be a %s, got %s', k, want, type(v)), 2)
    end
  end
  local function o(k)
    local v = opts[k]
    if v == nil then return '' end
    if type(v) == 'number' then return num(v) end
    return v
  end
  local argv = { false, fn_name, args_json, o('id'), o('jobHash'), o('priority'), o('timestamp'),
    o('delay'), o('retries'), o('timeout'), '', '', '', self.max_payload }
  if tick then
    argv[11], argv[12], argv[13] = tick[1], num(tick[2]), tick[3] and num(tick[3]) or ''
  end
  local res, err, code = run(self, 'enqueue', queue, argv)
  if not res then return nil, err, code end
  if tick then return res[1], TICK[res[2]] or 'existed' end
  return res[1], res[2] == 1
end

-- Many jobs in one call (enqueue_bulk.lua): jobs = { {fn, args_json, opts}... } (1..1000, each
-- as enqueue's arguments; send them in pieces of at most BULK_MAX jobs and BULK_BYTES bytes of
-- args). Every job is checked before anything is written: a bad one fails the whole call.
-- Returns ids, existed (arrays in the order of jobs), or nil, err, index (the job the error is
-- about, when the script named one). The script takes up to 1000 jobs; 800 here, because a
-- call's arguments are unpacked onto LuaJIT's C stack (at most 8000 values: 9 per job).
_M.BULK_MAX, _M.BULK_BYTES = 800, 4194304
local function opt_text(opts, k)
  local v = opts[k]
  if v == nil then return '' end
  if type(v) == 'number' then return num(v) end
  return v
end
function _M:enqueue_bulk(queue, jobs)
  check_queue('enqueue_bulk', queue)
  if type(jobs) ~= 'table' or #jobs == 0 or #jobs > _M.BULK_MAX then
    error(str_format('jobrt.ops.enqueue_bulk: jobs must be an array of 1-%d {fn, args_json, opts}', _M.BULK_MAX), 2)
  end
  -- jobs without options travel as (function, args) pairs: width 2, the cheap form
  local width = 2
  for i = 1, #jobs do
    local j = jobs[i]
    local fn, args, opts = j[1], j[2], j[3] or {}
    if type(fn) ~= 'string' or type(args) ~= 'string' or type(opts) ~= 'table' then
      error(str_format('jobrt.ops.enqueue_bulk: jobs[%d] must be {fn (string), args_json (string), opts (table)}', i), 2)
    end
    for k, v in pairs(opts) do
      local want = OPT_TYPES[k]
      if not want then
        error(str_format("jobrt.ops.enqueue_bulk: jobs[%d]: unknown option '%s' (known: jobHash, priority, timestamp, delay, id, retries, timeout)", i, tostring(k)), 2)
      end
      if type(v) ~= want and not (k == 'jobHash' and type(v) == 'number') then
        error(str_format('jobrt.ops.enqueue_bulk: jobs[%d]: option %s must be a %s, got %s', i, k, want, type(v)), 2)
      end
      width = 9
    end
  end
  local argv = { false, width == 2 and '2' or '9', self.max_payload }
  local n = 3
  for i = 1, #jobs do
    local j = jobs[i]
    argv[n + 1], argv[n + 2] = j[1], j[2]
    if width == 9 then
      local opts = j[3]
      argv[n + 3], argv[n + 4] = opt_text(opts, 'id'), opt_text(opts, 'jobHash')
      argv[n + 5], argv[n + 6], argv[n + 7] = opt_text(opts, 'priority'), opt_text(opts, 'timestamp'), opt_text(opts, 'delay')
      argv[n + 8], argv[n + 9] = opt_text(opts, 'retries'), opt_text(opts, 'timeout')
    end
    n = n + width
  end
  local res, err = run(self, 'enqueue_bulk', queue, argv)
  if not res then
    local i = tonumber(tostring(err):match('ARGV%[(%d+)%]'))
    return nil, err, i and i >= 4 and math_floor((i - 4) / width) + 1 or nil
  end
  local ids, existed = {}, {}
  for i = 1, #jobs do
    ids[i] = res[2 * i - 1]
    existed[i] = res[2 * i] == 1
  end
  return ids, existed
end

local function check_worker(fname, w)
  if type(w) ~= 'string' then error(str_format('jobrt.ops.%s: worker_id must be a string, got %s', fname, type(w)), 3) end
end
local function check_num(fname, name, v)
  if type(v) ~= 'number' then error(str_format('jobrt.ops.%s: %s must be a number, got %s', fname, name, type(v)), 3) end
end

-- leases[i] -> id, attempt as ARGV text; raises on a malformed entry
local function lease_pair(fname, leases, i)
  local l = leases[i]
  if type(l) ~= 'table' or type(l.id) ~= 'string' or type(l.attempt) ~= 'number' then
    error(str_format('jobrt.ops.%s: leases[%d] must be a table {id = string, attempt = number}', fname, i), 3)
  end
  return l.id, num(l.attempt)
end
local function check_leases(fname, leases)
  if type(leases) ~= 'table' then
    error(str_format('jobrt.ops.%s: leases must be an array of {id =, attempt =}, got %s', fname, type(leases)), 3)
  end
end

function _M:reserve(queue, worker_id, n, lease_s, alone)
  check_queue('reserve', queue)
  check_worker('reserve', worker_id)
  check_num('reserve', 'n', n)
  check_num('reserve', 'lease_s', lease_s)
  local res, err, code = run(self, 'reserve', queue, { false, worker_id, num(n), num(lease_s), self.ttl_failed,
    alone and '1' or '' })
  if not res then return nil, err, code end
  local jobs = {}
  local list = res[4]
  for i = 1, #list do
    local j = list[i]
    jobs[i] = { id = j[1], fn = j[2], args = j[3], attempt = tonumber(j[4]),
                retries = tonumber(nonnull(j[5])), timeout = tonumber(nonnull(j[6])), hash = nonnull(j[7]),
                fence = tonumber(j[8]), alone = j[9] == 1 }
  end
  return { jobs = jobs, now = res[1], next_due = nonnull(res[2]), next_lease = nonnull(res[3]),
           blocked = res[5] == 1, held = nonnull(res[6]), retry_at = tonumber(nonnull(res[7])), more = res[8] == 1 }
end

function _M:renew(queue, worker_id, leases, lease_s)
  check_queue('renew', queue)
  check_worker('renew', worker_id)
  check_leases('renew', leases)
  check_num('renew', 'lease_s', lease_s)
  local lost = {}
  for first = 1, #leases, 1000 do
    local argv = { false, worker_id, num(lease_s) }
    for i = first, math.min(first + 999, #leases) do
      local id, attempt = lease_pair('renew', leases, i)
      argv[#argv + 1] = id
      argv[#argv + 1] = attempt
    end
    local res, err, code = run(self, 'renew', queue, argv)
    if not res then return nil, err, code end
    for i = 1, #res do lost[#lost + 1] = { id = res[i][1], attempt = tonumber(res[i][2]) } end
  end
  return lost
end

function _M:complete(queue, worker_id, outcomes)
  check_queue('complete', queue)
  check_worker('complete', worker_id)
  if type(outcomes) ~= 'table' then error('jobrt.ops.complete: outcomes must be an array, got ' .. type(outcomes), 2) end
  local sum = { completed = 0, retried = 0, failed = 0, ignored = {}, cancelled = {} }
  for first = 1, #outcomes, 1000 do
    local argv = { false, worker_id, self.ttl_ok, self.ttl_failed, self.backoff }
    for i = first, math.min(first + 999, #outcomes) do
      local oc = outcomes[i]
      if type(oc) ~= 'table' or type(oc.id) ~= 'string' then
        error(str_format('jobrt.ops.complete: outcomes[%d] must be a table with a string id', i), 2)
      end
      if type(oc.attempt) ~= 'number' then
        error(str_format('jobrt.ops.complete: outcomes[%d].attempt must be a number (the attempt the lease belongs to), got %s',
          i, type(oc.attempt)), 2)
      end
      local n = #argv
      argv[n + 1] = oc.id
      argv[n + 2] = num(oc.attempt)
      if oc.ok then
        local v = oc.value
        if v ~= nil and type(v) ~= 'string' then
          error(str_format('jobrt.ops.complete: outcomes[%d].value must be JSON text (a string), got %s', i, type(v)), 2)
        end
        argv[n + 3], argv[n + 4], argv[n + 5] = 'ok', v or 'null', ''
      else
        local reason, exc = oc.reason, oc.exception
        if reason ~= nil and type(reason) ~= 'string' then reason = tostring(reason) end
        if exc ~= nil and type(exc) ~= 'string' then exc = tostring(exc) end
        argv[n + 3], argv[n + 4], argv[n + 5] = 'failed', reason or 'failed', exc or ''
      end
      if oc.retries ~= nil and type(oc.retries) ~= 'number' then
        error(str_format('jobrt.ops.complete: outcomes[%d].retries must be a number, got %s', i, type(oc.retries)), 2)
      end
      argv[n + 6] = oc.retries and num(oc.retries) or ''
    end
    if #argv > 5 then
      local res, err, code = run(self, 'complete', queue, argv)
      if not res then return nil, err, code end
      sum.completed = sum.completed + res[1]
      sum.retried = sum.retried + res[2]
      sum.failed = sum.failed + res[3]
      for i = 1, #res[4] do sum.ignored[#sum.ignored + 1] = res[4][i] end
      for i = 1, #res[5] do sum.cancelled[#sum.cancelled + 1] = res[5][i] end
      local nf = tonumber(res[6]) or 0
      if nf > 0 then sum.flows = (sum.flows or 0) + nf end
    end
  end
  return sum
end

function _M:requeue_expired(queue)
  check_queue('requeue_expired', queue)
  local res, err, code = run(self, 'requeue_expired', queue, { false, '', self.max_stalls, self.ttl_failed })
  if not res then return nil, err, code end
  local nf = tonumber(res[4]) or 0
  return res[1], res[2], res[3], nf > 0 and nf or nil
end

function _M:release(queue, worker_id, leases)
  check_queue('release', queue)
  check_worker('release', worker_id)
  check_leases('release', leases)
  local total = 0
  for first = 1, #leases, 1000 do
    local argv = { false, worker_id }
    for i = first, math.min(first + 999, #leases) do
      local id, attempt = lease_pair('release', leases, i)
      argv[#argv + 1] = id
      argv[#argv + 1] = attempt
    end
    local res, err, code = run(self, 'release', queue, argv)
    if not res then return nil, err, code end
    total = total + res
  end
  return total
end

local function record(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

function _M:get(queue, id)
  check_queue('get', queue)
  if type(id) ~= 'string' then error('jobrt.ops.get: id must be a string, got ' .. type(id), 2) end
  local res, err, code = run(self, 'get', queue, { false, id })
  if not res then return nil, err, code end
  if #res == 0 then return nil end
  return record(res)
end

function _M:delete(queue, id)
  check_queue('delete', queue)
  if type(id) ~= 'string' then error('jobrt.ops.delete: id must be a string, got ' .. type(id), 2) end
  local res, err, code = run(self, 'delete', queue, { false, id })
  if not res then return nil, err, code end
  return res == 1
end

-- calls a limited script until it handles fewer than limit failed-set entries
local function drain(self, name, queue)
  local total, limit = 0, 1000
  while true do
    local res, err, code = run(self, name, queue, { false, num(limit) })
    if not res then return nil, err, code end
    local done, examined = res, res
    if type(res) == 'table' then done, examined = res[1], res[2] end
    total = total + done
    if examined < limit then return total end
  end
end

function _M:retry_failed(queue)
  check_queue('retry_failed', queue)
  return drain(self, 'retry_failed', queue)
end

-- Queues one failed job again. Returns true, or false when id is not in the failed set.
function _M:retry_failed_job(queue, id)
  check_queue('retry_failed_job', queue)
  if type(id) ~= 'string' then error('jobrt.ops.retry_failed_job: id must be a string, got ' .. type(id), 2) end
  local res, err = run(self, 'retry_failed', queue, { false, '', id })
  if not res then return nil, err end
  return res[1] == 1
end

function _M:delete_failed(queue)
  check_queue('delete_failed', queue)
  return drain(self, 'delete_failed', queue)
end

function _M:list_failed(queue, offset, count)
  check_queue('list_failed', queue)
  if offset ~= nil then check_num('list_failed', 'offset', offset) end
  if count ~= nil then check_num('list_failed', 'count', count) end
  local res, err, code = run(self, 'list_failed', queue, { false, offset and num(offset) or '', count and num(count) or '' })
  if not res then return nil, err, code end
  local out = {}
  for i = 1, #res[2] do out[i] = record(res[2][i]) end
  return out, res[1]
end

-- ---- the worker registry (register.lua) ----------------------------------------------

_M.WORKERS_KEY = 'jobrt:{workers}'
_M.WORKER_PREFIX = 'jobrt:{workers}:'

local function check_worker_id(fname, w)
  if type(w) ~= 'string' or w == '' or #w > 128 or w:find('[%c{}|]') then
    error(str_format('jobrt.ops.%s: worker_id must be 1-128 bytes without control characters, braces or |, got %s',
      fname, type(w) == 'string' and ("'" .. w:sub(1, 40) .. "'") or type(w)), 3)
  end
end

-- Registers (or renews) worker_id for ttl_s seconds with the fields of `info` (a table of
-- string/number values), in one call. Returns the number of workers alive, or nil, err.
function _M:register(worker_id, ttl_s, info)
  check_worker_id('register', worker_id)
  check_num('register', 'ttl_s', ttl_s)
  local argv = { 'beat', num(ttl_s) }
  local fields = {}
  for k in pairs(info) do fields[#fields + 1] = k end
  table.sort(fields)
  for _, k in ipairs(fields) do
    argv[#argv + 1] = k
    argv[#argv + 1] = tostring(info[k])
  end
  return self.s:call('register', { _M.WORKERS_KEY, _M.WORKER_PREFIX .. worker_id }, argv)
end

-- Removes worker_id from the registry. Returns true or nil, err.
function _M:unregister(worker_id)
  check_worker_id('unregister', worker_id)
  local res, err, code = self.s:call('register', { _M.WORKERS_KEY, _M.WORKER_PREFIX .. worker_id }, { 'stop' })
  if res == nil then return nil, err, code end
  return true
end

-- The records of the workers alive (field -> string), sorted by id; expired ids are dropped.
function _M:workers()
  local res, err, code = self.s:call('register', { _M.WORKERS_KEY, _M.WORKER_PREFIX }, { 'list' })
  if not res then return nil, err, code end
  local out = {}
  for i = 1, #res do out[i] = record(res[i]) end
  table.sort(out, function(a, b) return tostring(a.id) < tostring(b.id) end)
  return out
end

function _M:stats(queue)
  check_queue('stats', queue)
  local res, err, code = run(self, 'stats', queue, { false })
  if not res then return nil, err, code end
  local t = {}
  for i = 1, #res, 2 do t[(res[i]:gsub('-', '_'))] = res[i + 1] end
  -- parents waiting for their children (flows) are in no structure stats.lua counts
  local w, werr, wcode = self.r:call('ZCARD', _M.flow_keys(queue)[17])
  if w == nil then return nil, werr, wcode end
  t.waiting_children = w
  return t
end

-- ---- scheduling and flow control (lua-server-scripts/README.md "Flow control", "Cron") ----

function _M:pause(queue)
  check_queue('pause', queue)
  local res, err, code = run(self, 'pause', queue, { false, 'pause' })
  if not res then return nil, err, code end
  return res == 1
end

function _M:resume(queue)
  check_queue('resume', queue)
  local res, err, code = run(self, 'pause', queue, { false, 'resume' })
  if not res then return nil, err, code end
  return res == 1
end

function _M:limit(queue, set)
  check_queue('limit', queue)
  if set ~= nil and type(set) ~= 'table' then error('jobrt.ops.limit: set must be a table, got ' .. type(set), 2) end
  local argv = { false }
  if set then
    for k in pairs(set) do
      if k ~= 'rate' and k ~= 'max_active' then
        error(str_format("jobrt.ops.limit: unknown limit '%s' (known: rate, max_active)", tostring(k)), 2)
      end
    end
    if set.rate ~= nil then
      local r = set.rate
      if r == false then
        argv[#argv + 1], argv[#argv + 2] = 'rate', ''
      elseif type(r) == 'table' and type(r[1]) == 'number' and type(r[2]) == 'number' then
        argv[#argv + 1], argv[#argv + 2] = 'rate', num(r[1]) .. '/' .. num(r[2])
      else
        error('jobrt.ops.limit: rate must be { n, per_seconds } or false', 2)
      end
    end
    if set.max_active ~= nil then
      local m = set.max_active
      if m ~= false and type(m) ~= 'number' then error('jobrt.ops.limit: max_active must be a number or false', 2) end
      argv[#argv + 1], argv[#argv + 2] = 'max-active', m and num(m) or ''
    end
  end
  local res, err, code = run(self, 'limit', queue, argv)
  if not res then return nil, err, code end
  local t = {}
  for i = 1, #res, 2 do t[(res[i]:gsub('-', '_'))] = tonumber(res[i + 1]) or 0 end
  return t
end

function _M:progress(queue, worker_id, id, attempt, value_json)
  check_queue('progress', queue)
  check_worker('progress', worker_id)
  if type(id) ~= 'string' then error('jobrt.ops.progress: id must be a string, got ' .. type(id), 2) end
  check_num('progress', 'attempt', attempt)
  if type(value_json) ~= 'string' then error('jobrt.ops.progress: value must be JSON text, got ' .. type(value_json), 2) end
  local keys = {}
  for i, k in ipairs(_M.keys(queue)) do keys[i] = k end
  keys[15] = _M.channels(queue).progress
  local res, err, code = run(self, 'progress', queue, { false, worker_id, id, num(attempt), value_json }, keys)
  if not res then return nil, err, code end
  return res == 1
end

function _M:postpone(queue, worker_id, items)
  check_queue('postpone', queue)
  check_worker('postpone', worker_id)
  if type(items) ~= 'table' then error('jobrt.ops.postpone: items must be an array, got ' .. type(items), 2) end
  local total = 0
  for first = 1, #items, 1000 do
    local argv = { false, worker_id }
    for i = first, math.min(first + 999, #items) do
      local it = items[i]
      if type(it) ~= 'table' or type(it.id) ~= 'string' or type(it.attempt) ~= 'number' or type(it.delay) ~= 'number' then
        error(str_format('jobrt.ops.postpone: items[%d] must be {id = string, attempt = number, delay = seconds}', i), 2)
      end
      argv[#argv + 1] = it.id
      argv[#argv + 1] = num(it.attempt)
      argv[#argv + 1] = num(it.delay)
      argv[#argv + 1] = it.reason and tostring(it.reason) or ''
    end
    local res, err, code = run(self, 'postpone', queue, argv)
    if not res then return nil, err, code end
    total = total + res
  end
  return total
end

function _M:drain(queue)
  check_queue('drain', queue)
  local total = 0
  while true do
    local res, err, code = run(self, 'drain', queue, { false, '1000' })
    if not res then return nil, err, code end
    total = total + res[1]
    if res[2] == 0 then return total end
  end
end

function _M:cron_set(queue, name, entry)
  check_queue('cron_set', queue)
  if type(name) ~= 'string' then error('jobrt.ops.cron_set: name must be a string, got ' .. type(name), 2) end
  if type(entry) ~= 'table' then error('jobrt.ops.cron_set: entry must be a table, got ' .. type(entry), 2) end
  -- sorted keys: the same entry is the same text (cron_set answers "unchanged" for it)
  local text, jerr = json.encode(entry, { sort = true, name = 'entry' })
  if not text then error('jobrt.ops.cron_set: ' .. jerr, 2) end
  local res, err, code = run(self, 'cron_set', queue, { false, name, text })
  if not res then return nil, err, code end
  return res
end

function _M:cron_delete(queue, name, source)
  check_queue('cron_delete', queue)
  if type(name) ~= 'string' then error('jobrt.ops.cron_delete: name must be a string, got ' .. type(name), 2) end
  local res, err, code = run(self, 'cron_delete', queue, { false, name, source or '' })
  if not res then return nil, err, code end
  return res == 1
end

-- The cron entries of a queue, read from its stats hash (HGETALL; no script needed).
function _M:cron_entries(queue)
  check_queue('cron_entries', queue)
  local flat, err, code = self.r:call('HGETALL', _M.keys(queue)[11])
  if flat == nil then return nil, err, code end
  local out = {}
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    local name = f:match('^cron:(.+)$')
    if name then
      local e = json.decode(v)
      out[name] = out[name] or {}
      out[name].entry = type(e) == 'table' and e or { broken = v }
    else
      name = f:match('^cron%-last:(.+)$')
      if name then
        out[name] = out[name] or {}
        out[name].last = tonumber(v)
      end
    end
  end
  for name, c in pairs(out) do
    if not c.entry then out[name] = nil end        -- a cron-last without its entry: a leftover
  end
  return out
end

-- ---- flows (lua-server-scripts/README.md "Flows") -------------------------------------

-- Applies outbox entries ({ {key=, text=}... }, any number, sent 1000 per call) to queue.
-- Returns statuses (one per entry, see flow_deliver.lua), written (outbox entries written in
-- queue), or nil, err.
function _M:flow_deliver(queue, entries)
  check_queue('flow_deliver', queue)
  if type(entries) ~= 'table' then error('jobrt.ops.flow_deliver: entries must be an array, got ' .. type(entries), 2) end
  local statuses, written = {}, 0
  for first = 1, #entries, 1000 do
    local argv = { false, self.ttl_failed }
    for i = first, math.min(first + 999, #entries) do
      local e = entries[i]
      if type(e) ~= 'table' or type(e.key) ~= 'string' or type(e.text) ~= 'string' then
        error(str_format('jobrt.ops.flow_deliver: entries[%d] must be {key = string, text = string}', i), 2)
      end
      argv[#argv + 1] = e.key
      argv[#argv + 1] = e.text
    end
    local res, err, code = run(self, 'flow_deliver', queue, argv)
    if not res then return nil, err, code end
    for i = 1, #res[1] do statuses[#statuses + 1] = res[1][i] end
    written = written + res[2]
  end
  return statuses, written
end

-- Takes up to limit entries of queue's outbox held until now + horizon_ms at the latest, and
-- holds them for hold_ms. Returns { now = ms, next = ms|nil, entries = { {key=, text=,
-- stamp=}... } } or nil, err.
function _M:flow_take(queue, limit, horizon_ms, hold_ms)
  check_queue('flow_take', queue)
  check_num('flow_take', 'limit', limit)
  check_num('flow_take', 'horizon_ms', horizon_ms)
  check_num('flow_take', 'hold_ms', hold_ms)
  local res, err, code = run(self, 'flow_take', queue, { false, num(limit), num(horizon_ms), num(hold_ms) })
  if not res then return nil, err, code end
  local out = {}
  for i, e in ipairs(res[3]) do out[i] = { key = e[1], text = e[2], stamp = e[3] } end
  return { now = res[1], next = tonumber(nonnull(res[2])), entries = out }
end

-- Removes delivered outbox entries of queue ({ {key=, stamp=}... }). Returns n or nil, err.
function _M:flow_ack(queue, acks)
  check_queue('flow_ack', queue)
  if type(acks) ~= 'table' then error('jobrt.ops.flow_ack: acks must be an array, got ' .. type(acks), 2) end
  local total = 0
  for first = 1, #acks, 1000 do
    local argv = { false }
    for i = first, math.min(first + 999, #acks) do
      local a = acks[i]
      if type(a) ~= 'table' or type(a.key) ~= 'string' or type(a.stamp) ~= 'string' then
        error(str_format('jobrt.ops.flow_ack: acks[%d] must be {key = string, stamp = string}', i), 2)
      end
      argv[#argv + 1] = a.key
      argv[#argv + 1] = a.stamp
    end
    local res, err, code = run(self, 'flow_ack', queue, argv)
    if not res then return nil, err, code end
    total = total + res
  end
  return total
end

-- The children of parent id of queue, from its children hash (HGETALL, no script): an array in
-- the order they were given, each { queue=, id=, state= 'pending'|'successful'|'failed'|
-- 'deleted', value= text (the result JSON, or the reason), ignore= boolean }; empty when id is
-- no parent (or its record expired). Or nil, err.
function _M:children(queue, id)
  check_queue('children', queue)
  if type(id) ~= 'string' then error('jobrt.ops.children: id must be a string, got ' .. type(id), 2) end
  local flat, err, code = self.r:call('HGETALL', _M.flow_keys(queue)[18] .. id)
  if flat == nil then return nil, err, code end
  local out = {}
  for i = 1, #flat, 2 do
    local cq, cid = flat[i]:match('^([^|]*)|(.*)$')
    local _, state, ign, idx, value = flat[i + 1]:match('^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
    if cq and state then
      out[#out + 1] = { queue = cq, id = cid, state = state, value = value, ignore = ign == '1', index = tonumber(idx) or 0 }
    end
  end
  table.sort(out, function(a, b) return a.index < b.index end)
  return out
end

function _M:enqueue_tick(queue, name, tick_ms, skip_late_ms, fn_name, args_json, opts)
  if type(name) ~= 'string' then error('jobrt.ops.enqueue_tick: name must be a string, got ' .. type(name), 2) end
  check_num('enqueue_tick', 'tick_ms', tick_ms)
  if skip_late_ms ~= nil then check_num('enqueue_tick', 'skip_late_ms', skip_late_ms) end
  return self:enqueue(queue, fn_name, args_json, opts, { name, tick_ms, skip_late_ms })
end

return _M
