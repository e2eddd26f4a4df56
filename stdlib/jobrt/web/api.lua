-- jobrt.web.api: the REST API of `jobrt web` (issue 15, DESIGN "HTTP"). JSON in and out; every
-- error is {"error": message} with its status. Everything goes through the queue client
-- (jobrt.client), as `jobrt enqueue`, `stats`, `job`, `delete` and `failed` do.
--
--   POST   /api/queues/{Q}/jobs[?wait=S]   body {"job", "args", "id", "jobHash", "priority",
--          "timestamp", "delay", "retries", "timeout"} -> 201 {"id", "existed"}; a JSON array
--          of such objects -> 201 [{"id", "existed"}...] (all checked before any is sent).
--          ?wait=S (<= 3600) waits for the job like `enqueue --wait`: 201 {"id", "existed",
--          "result": "successful"|"failed", "value", "error"}; 504 when it did not finish.
--   GET    /api/queues/{Q}/jobs/{ID}       -> 200 the record (as `jobrt job`: args and result-value
--          as the JSON values they hold), 404 none
--   DELETE /api/queues/{Q}/jobs/{ID}       -> 204 deleted (a running job is cancelled), 404 none
--   GET    /api/queues/{Q}/jobs/{ID}/flow[?max=N] -> 200 the flow the job belongs to, from its
--          root (q:getFlowTree): {"queue", "id", "job", "state", "result", "error", "children":
--          [same], "more": n} with at most N jobs (default 1000); a job of no flow is a tree of
--          one; 404 none
--   GET    /api/stats                      -> {"queues": {Q: counts}, "workers": [...]} (stats --json)
--   GET    /api/queues                     -> [{"name", "type", counts...}] sorted by name
--   GET    /api/queues/{Q}                 -> counts of one queue
--   GET    /api/workers                    -> [worker records] (pid, started, heartbeat, done,
--          failed, inflight, concurrency as numbers; also in /api/stats)
--   GET    /api/queues/{Q}/failed[?offset=&count=] -> {"total", "jobs": [records as GET job, newest first]}
--   POST   /api/queues/{Q}/failed/retry    -> {"retried": n}
--   POST   /api/queues/{Q}/failed/{ID}/retry -> {"retried": 1}; 404 when it is not in the failed set
--   DELETE /api/queues/{Q}/failed          -> {"deleted": n}
--   POST   /api/queues/{Q}/pause           -> {"paused": true, "changed": bool} (jobrt pause)
--   POST   /api/queues/{Q}/resume          -> {"paused": false, "changed": bool} (jobrt resume)
--   GET    /api/queues and /api/queues/{Q} carry "paused" (0|1), "rate_max", "rate_per",
--          "max_active" (0: no such limit) and "crons" besides the counts
-- Status codes: 400 bad input (the message names the field: "the queue name ...", "the job id
-- ...", "the job name ...", "option 'id' ..."; names are checked with jobrt.names and the
-- client's check_job before anything reaches Redis, and a batch with one bad element writes
-- nothing), 404 unknown queue (no type in RESERVED:QCONFIG) or job, 409 refused by the queue
-- (an id still stopping), 503 Redis not reachable, 504 ?wait ran out; 500 only for a bug.
local jobrt = require 'jobrt'
local client = require 'jobrt.client'
local json = require 'jobrt.json'
local names = require 'jobrt.names'

local type, pairs, ipairs, tostring, tonumber, pcall, unpack = type, pairs, ipairs, tostring, tonumber, pcall, unpack
local str_format, sort = string.format, table.sort

local _M = {}

local web                       -- jobrt.web, set by install
local fail

-- Queue names and ids come from the path (decoded): checked with jobrt.names (DESIGN "Names and
-- sizes") before anything reaches Redis, so bad input is a 400 naming the field, never a 500.
-- check_name('the queue name', v) checks a queue name, any other `what` an existing job's id.
local function check_name(what, v)
  if what == 'the queue name' then
    local err = names.queue(v)
    if err then fail(400, 'the queue name ' .. err) end
  else
    local err = names.ref(v)
    if err then fail(400, what .. ' ' .. err) end
  end
end
_M.check_name = check_name

-- The status for an error raised by the client.
local function status_of(msg, default)
  if msg:find('ECONN') or msg:find('ETIMEDOUT') or msg:find('ECLOSED') then return 503 end
  if msg:find('in RESERVED:QCONFIG') then return 404 end
  if msg:find('did not finish within') then return 504 end
  return default or 500
end

-- Calls fn(...) (a client call); raises an HTTP error with a fitting status when it fails.
local function call(default_status, fn, ...)
  local r = { pcall(fn, ...) }
  if r[1] then return unpack(r, 2, table.maxn(r)) end
  local raw = tostring(r[2])
  local msg = raw:gsub('^[%l_%.]+: ', '', 1)        -- "stats: ..." -> "..."; codes (ECONN) stay
  fail(status_of(raw, default_status), msg)
end
_M.call = call

-- A job record as `jobrt job` shows it: args and result-value as the JSON values they hold (a
-- field that is not JSON, written by another tool, stays the string it is).
local function record_values(rec)
  for _, f in ipairs({ 'args', 'result-value' }) do
    local t = rec[f]
    if type(t) == 'string' then
      local v = json.decode(t)
      if v ~= nil then rec[f] = v end
    end
  end
  return rec
end
_M.record_values = record_values

-- The numeric fields of a worker's registry entry (jobrt.worker register_self), which Redis
-- hands back as text: numbers in the API.
local WORKER_NUMBERS = { 'pid', 'started', 'heartbeat', 'done', 'failed', 'inflight', 'concurrency' }
local function worker_values(list)
  for _, w in ipairs(list) do
    for _, f in ipairs(WORKER_NUMBERS) do
      local n = type(w[f]) == 'string' and tonumber(w[f])
      if n then w[f] = n end
    end
  end
  return web.array(list)
end
_M.worker_values = worker_values

local FIELDS = { job = true, args = true }

-- One job object of a POST body -> job, args JSON text, options (raises 400).
local function job_item(item, where)
  if type(item) ~= 'table' then fail(400, where .. 'must be a JSON object {"job": NAME, "args": ...}') end
  local job = item.job
  if type(job) ~= 'string' or job == '' or #job > 256 then
    fail(400, where .. '"job" must be a job name (a string of 1-256 bytes)')
  end
  -- the CLI's and the client's rules: no '{' '}' or control characters, no leading '_'
  local jok, jerr = pcall(client.check_job, 'enqueue', job)
  if not jok then fail(400, where .. tostring(jerr):gsub('^enqueue: ', '', 1)) end
  local opts = {}
  for k, v in pairs(item) do
    if not FIELDS[k] then opts[k] = v end
  end
  local ok, clean = pcall(client.check_options, 'enqueue', opts)
  if not ok then fail(400, where .. tostring(clean):gsub('^enqueue: ', '', 1)) end
  local text = '{}'
  if item.args ~= nil then text = web.encode(item.args) end
  return job, text, clean
end

local function enqueue(s, req, queue)
  check_name('the queue name', queue)
  local body = web.body_json(req, true)
  local wait = web.query_seconds(req, 'wait', 3600)
  local many = req.body:find('^%s*%[') ~= nil
  local list = many and body or { body }
  if type(list) ~= 'table' then fail(400, 'the body must be a JSON object or an array of objects') end
  if many and wait then fail(400, '?wait works with one job: send a JSON object, not an array') end
  if many and #list > 10000 then fail(400, 'at most 10000 jobs per request, got ' .. #list) end
  local items = {}
  for i, it in ipairs(list) do
    local where = many and str_format('jobs[%d]: ', i) or ''
    local job, text, o = job_item(it, where)
    -- one job: its args are stored exactly as the body wrote them
    if not many and it.args ~= nil then text = json.member(req.body, 'args') or text end
    items[i] = { job = job, text = text, opts = o, where = where }
  end
  local q = s:client()
  local qtype = call(500, q.queueType, q, queue)
  if qtype == nil then
    fail(404, str_format("queue '%s' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
      queue, queue))
  end
  for _, it in ipairs(items) do
    local msg = client.type_rules('enqueue', queue, qtype, it.opts, it.where)
    if msg then fail(400, (msg:gsub('^enqueue: ', '', 1))) end
  end
  if wait then
    local it = items[1]
    local id, rec = call(409, client.enqueue_and_wait, q, 'enqueue', queue, it.job, it.text, it.opts, wait)
    if rec == false then fail(410, str_format("job %s was deleted before it finished", id)) end
    local out = { id = id, existed = false, result = rec.result }
    if rec.result == 'successful' then
      out.value = client.decode_result(rec['result-value'])
    else
      local _, m = client.outcome(queue, id, rec)
      out.error = rec['error-reason'] or m
    end
    return s:reply(req, 201, out)
  end
  if not many then
    local it = items[1]
    local id, existed = call(409, client.enqueue_one, q, 'enqueue', queue, it.job, it.text, it.opts)
    return s:reply(req, 201, { id = id, existed = existed and true or false })
  end
  -- many: up to 200 in flight (the connection pipelines them), answers in order
  local out, nexti, first_err = web.array({}), 1, nil
  local wg = jobrt.waitgroup()
  local function worker()
    while nexti <= #items and not first_err do
      local i = nexti
      nexti = nexti + 1
      local it = items[i]
      local ok, id, existed = pcall(client.enqueue_one, q, 'enqueue', queue, it.job, it.text, it.opts)
      if ok then
        out[i] = { id = id, existed = existed and true or false }
      else
        first_err = first_err or { i = i, msg = tostring(id) }
      end
    end
  end
  for _ = 1, math.min(200, #items) do wg:spawn(worker) end
  wg:wait()
  if first_err then
    local msg = first_err.msg:gsub('^[%l_%.]+: ', '', 1)
    local done = 0
    for i = 1, #items do if out[i] then done = done + 1 end end
    fail(status_of(msg, 409), str_format('jobs[%d]: %s (%d of %d jobs were enqueued)', first_err.i, msg, done, #items))
  end
  return s:reply(req, 201, out)
end

local function get_job(s, req, queue, id)
  check_name('the queue name', queue)
  check_name('the job id', id)
  local q = s:client()
  local rec = call(500, q.getJob, q, queue, id)
  if rec == nil then
    fail(404, str_format("no job %s in queue '%s' (finished records expire: successful after 1 hour, failed after 7 days)", id, queue))
  end
  return s:reply(req, 200, record_values(rec))
end

local function job_flow(s, req, queue, id)
  check_name('the queue name', queue)
  check_name('the job id', id)
  local max = 1000
  local v = req.query.max
  if v ~= nil and v ~= '' then
    max = tonumber(v)
    if not max or max ~= math.floor(max) or max < 1 or max > 100000 then
      fail(400, str_format("query parameter 'max' must be a whole number from 1 to 100000, got '%s'", v))
    end
  end
  local q = s:client()
  local tree = call(500, q.getFlowTree, q, queue, id, max)
  if tree == nil then fail(404, str_format("no job %s in queue '%s'", id, queue)) end
  local function arrays(t)
    t.children = web.array(t.children)
    for _, c in ipairs(t.children) do arrays(c) end
    return t
  end
  return s:reply(req, 200, arrays(tree))
end

local function delete_job(s, req, queue, id)
  check_name('the queue name', queue)
  check_name('the job id', id)
  local q = s:client()
  local ok = call(500, q.deleteJob, q, queue, id)
  if not ok then fail(404, str_format("no job %s in queue '%s'", id, queue)) end
  return s:reply(req, 204, nil)
end

local function stats(s, req)
  local q = s:client()
  local st = call(500, q.stats, q)
  local workers = call(500, q.workers, q)
  return s:reply(req, 200, { queues = st, workers = worker_values(workers) })
end

local function queues(s, req)
  local q = s:client()
  local st = call(500, q.stats, q)
  local out = web.array({})
  for name, c in pairs(st) do
    local t = { name = name }
    for k, v in pairs(c) do t[k] = v end
    out[#out + 1] = t
  end
  sort(out, function(a, b) return a.name < b.name end)
  return s:reply(req, 200, out)
end

local function one_queue(s, req, queue)
  check_name('the queue name', queue)
  local q = s:client()
  local st = call(500, q.stats, q, queue)
  st.name = queue
  return s:reply(req, 200, st)
end

local function workers(s, req)
  local q = s:client()
  return s:reply(req, 200, worker_values(call(500, q.workers, q)))
end

local function query_count(req, name, default, max)
  local v = req.query[name]
  if v == nil or v == '' then return default end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < 0 or n > max then
    fail(400, str_format("query parameter '%s' must be a whole number from 0 to %d, got '%s'", name, max, v))
  end
  return n
end

local function failed_list(s, req, queue)
  check_name('the queue name', queue)
  local offset = query_count(req, 'offset', 0, 1e9)
  local count = query_count(req, 'count', 50, 1000)
  if count < 1 then fail(400, "query parameter 'count' must be at least 1") end
  local q = s:client()
  local recs, total = call(500, q.listFailedJobs, q, queue, offset, count)
  for _, rec in ipairs(recs) do record_values(rec) end
  return s:reply(req, 200, { total = total, jobs = web.array(recs) })
end

local function failed_retry(s, req, queue)
  check_name('the queue name', queue)
  local q = s:client()
  return s:reply(req, 200, { retried = call(500, q.retryFailedJobs, q, queue) })
end

local function failed_retry_one(s, req, queue, id)
  check_name('the queue name', queue)
  check_name('the job id', id)
  local q = s:client()
  if not call(500, q.retryFailedJob, q, queue, id) then
    fail(404, str_format("job %s is not in the failed set of queue '%s'", id, queue))
  end
  return s:reply(req, 200, { retried = 1 })
end

local function failed_delete(s, req, queue)
  check_name('the queue name', queue)
  local q = s:client()
  return s:reply(req, 200, { deleted = call(500, q.deleteFailedJobs, q, queue) })
end

local function pause(s, req, queue)
  check_name('the queue name', queue)
  local q = s:client()
  return s:reply(req, 200, { paused = true, changed = call(500, q.pause, q, queue) })
end

local function resume(s, req, queue)
  check_name('the queue name', queue)
  local q = s:client()
  return s:reply(req, 200, { paused = false, changed = call(500, q.resume, q, queue) })
end

function _M.install(w)
  web, fail = w, w.fail
  local route = w.route
  route('POST', '/api/queues/:q/jobs', enqueue)
  route('GET', '/api/queues/:q/jobs/:id', get_job)
  route('DELETE', '/api/queues/:q/jobs/:id', delete_job)
  route('GET', '/api/queues/:q/jobs/:id/flow', job_flow)
  route('GET', '/api/stats', stats)
  route('GET', '/api/queues', queues)
  route('GET', '/api/queues/:q', one_queue)
  route('GET', '/api/workers', workers)
  route('GET', '/api/queues/:q/failed', failed_list)
  route('POST', '/api/queues/:q/failed/retry', failed_retry)
  route('POST', '/api/queues/:q/failed/:id/retry', failed_retry_one)
  route('DELETE', '/api/queues/:q/failed', failed_delete)
  route('POST', '/api/queues/:q/pause', pause)
  route('POST', '/api/queues/:q/resume', resume)
end

return _M
