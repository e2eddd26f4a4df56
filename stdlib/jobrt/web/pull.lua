-- jobrt.web.pull: pull-style workers over HTTP (seed 002's RESERVE/RELEASE), for programs in any
-- language. A job handed out here holds a lease exactly as a Lua worker's does (the same
-- reserve/renew/complete/release scripts through jobrt.ops), so leases run out and come back
-- the same way.
--
--   POST /api/queues/{Q}/reserve[?wait=S&lease=S&worker=NAME]
--        -> 200 {"id", "job", "args", "attempt", "retries", "timeout", "jobHash", "queue",
--                "lease": TOKEN, "lease_seconds"}, or 204 when no job came within wait (<= 300 s,
--                default 0). lease: seconds the job is held without a renewal (1-3600, default 30).
--                A long poll is woken by the queue's wake channel (as Lua workers are), by a
--                timer armed for the next due job, and by one armed for the earliest lease
--                expiry (then expired leases are taken back: requeue_expired).
--   POST /api/queues/{Q}/jobs/{ID}/renew     {"lease": TOKEN[, "seconds": S]} -> {"ok": true}
--   POST /api/queues/{Q}/jobs/{ID}/complete  {"lease": TOKEN, "result": VALUE} -> {"ok": true}
--   POST /api/queues/{Q}/jobs/{ID}/fail      {"lease": TOKEN, "error": TEXT[, "traceback": TEXT]}
--                                            -> {"ok": true, "retried": bool, "failed": bool}
--   POST /api/queues/{Q}/jobs/{ID}/release   {"lease": TOKEN} -> {"ok": true, "released": n}
--   409 {"error"} when the lease is no longer held (taken back after it ran out, or the job was
--   deleted): stop working on that job; 400 for a malformed or foreign token.
--
-- The lease token is opaque to clients: "l1." .. base64url(worker "\n" attempt "\n" id). Each
-- reservation gets a worker id of its own ("http:NAME:RANDOM"), so one lease is one attempt of
-- one job of one queue, and the attempt goes with every renew, complete, fail and release, so
-- a call for any other attempt of the job is refused (409). Each reservation counts as a
-- worker that runs nothing else (reserve's `alone`), so a job that must run alone (taken back
-- after a lost lease) can be handed out here too.
-- Flows: a complete or fail that wrote news for a parent carries them over before it answers
-- (jobrt.flows), and each requeue of expired leases also carries what is overdue, as Lua
-- workers do.
local jobrt = require 'jobrt'
local ops_mod = require 'jobrt.ops'
local flows = require 'jobrt.flows'
local http = require 'jobrt.core.http'
local json = require 'jobrt.json'
local bit = require 'bit'

local type, pairs, tostring, tonumber, pcall = type, pairs, tostring, tonumber, pcall
local str_format, byte, char, concat = string.format, string.byte, string.char, table.concat

local _M = {}
local web, fail, api

-- ---- lease tokens ------------------------------------------------------------------------

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local B64R = {}
for i = 1, 64 do B64R[byte(B64, i)] = i - 1 end

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local k = #out
    out[k + 1] = B64:sub(bit.rshift(n, 18) + 1, bit.rshift(n, 18) + 1)
    out[k + 2] = B64:sub(bit.band(bit.rshift(n, 12), 63) + 1, bit.band(bit.rshift(n, 12), 63) + 1)
    if b then out[k + 3] = B64:sub(bit.band(bit.rshift(n, 6), 63) + 1, bit.band(bit.rshift(n, 6), 63) + 1) end
    if c then out[k + 4] = B64:sub(bit.band(n, 63) + 1, bit.band(n, 63) + 1) end
  end
  return concat(out)
end

local function unb64(s)
  if s:find('[^%w%-_]') or #s % 4 == 1 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local n, k = 0, 0
    for j = i, math.min(i + 3, #s) do
      n = n * 64 + B64R[byte(s, j)]
      k = k + 1
    end
    for _ = k + 1, 4 do n = n * 64 end
    local bytes = { bit.rshift(n, 16), bit.band(bit.rshift(n, 8), 255), bit.band(n, 255) }
    for j = 1, k - 1 do out[#out + 1] = char(bytes[j]) end
  end
  return concat(out)
end

function _M.token(worker, attempt, id)
  return 'l1.' .. b64(worker .. '\n' .. tostring(attempt) .. '\n' .. id)
end

-- token -> worker, attempt, id; nil when it is not one of ours.
function _M.parse_token(tok)
  if type(tok) ~= 'string' or tok:sub(1, 3) ~= 'l1.' or #tok > 2000 then return nil end
  local raw = unb64(tok:sub(4))
  if not raw then return nil end
  local w, a, id = raw:match('^([^\n]+)\n(%d+)\n(.+)$')
  -- the worker ids reserve makes (http:NAME:HEX); anything else was not written by us
  if not w or #w > 100 or not w:find('^[%w%-_.:]+$') or #a > 9 then return nil end
  return w, tonumber(a), id
end

-- ---- per-queue wake-ups --------------------------------------------------------------------

-- The state of queue for the long polls: a generation counter bumped by every wake-up, a
-- condition the polls wait on, and the two timers.
local function qstate(s, queue)
  local st = s.pull[queue]
  if st then return st end
  st = { gen = 0, cond = jobrt.cond(), due = jobrt.timer(), lease = jobrt.timer(), subscribed = false,
         first = true }
  s.pull[queue] = st
  return st
end

local function poke(st)
  st.gen = st.gen + 1
  st.cond:broadcast()
end

local function subscribe(s, queue, st)
  if st.subscribed then return end
  st.subscribed = 'pending'
  local ok, err = s.r2:subscribe(ops_mod.channels(queue).wake, function() poke(st) end)
  if not ok then
    st.subscribed = false
    fail(503, 'cannot subscribe to the wake channel of ' .. queue .. ': ' .. tostring(err))
  end
  st.subscribed = true
end

-- Carries queue's flow news over (fresh: also those just written); trouble is logged, and the
-- news wait in the outbox for the next try (any worker of the queue takes them once overdue).
local function carry(s, queue, fresh)
  local ok, err = flows.carry(s.ops, queue, { fresh = fresh })
  if not ok then jobrt.log('warn', 'jobrt web: queue %s: cannot carry over flow news: %s', queue, tostring(err)) end
end

local function requeue(s, queue, st)
  if s.stopped or not s.ops then return end
  carry(s, queue, false)
  local n, nfailed = s.ops:requeue_expired(queue)
  if n and n + (nfailed or 0) > 0 then
    jobrt.log('info', 'jobrt web: queue %s: %d job(s) whose lease ran out were put back, %d failed', queue, n, nfailed or 0)
  end
  poke(st)
end

-- Arms the timers from a reserve reply (times in server ms).
local function arm(s, queue, st, res)
  if s.stopped then return end
  local now = tonumber(res.now) or 0
  local due = tonumber(res.next_due)
  -- flow control held the queue back: a wake-up (resume, a lease that ends) or, for the rate,
  -- its retry_at comes first; a due time already passed would only wake us to be held again
  if res.held then due = res.held == 'rate' and tonumber(res.retry_at) or nil end
  if due then
    st.due:start(math.max(0, (due - now) / 1000), function() poke(st) end)
  else
    st.due:stop()
  end
  local lease = tonumber(res.next_lease)
  if lease then
    st.lease:start(math.max(0, (lease - now) / 1000 + 0.005), function() requeue(s, queue, st) end)
  else
    st.lease:stop()
  end
end

-- ---- handlers ------------------------------------------------------------------------------

local UNAVAILABLE = { ECONN = true, ECONNREFUSED = true, ETIMEDOUT = true, ECLOSED = true, EPROTO = true }

local function ops_call(fn, ...)
  local v, err, e3 = fn(...)
  if v == nil and err ~= nil then
    local msg = tostring(err)
    fail(UNAVAILABLE[e3] and 503
      or (msg:find('in RESERVED:QCONFIG') and 404) or 500, msg)
  end
  return v, err, e3
end

local function reserve(s, req, queue)
  api.check_name('the queue name', queue)
  local wait = web.query_seconds(req, 'wait', 300) or 0
  local lease = web.query_seconds(req, 'lease', 3600) or 30
  if lease < 1 then fail(400, "query parameter 'lease' must be at least 1 second") end
  local name = req.query.worker or 'http'
  if not name:find('^[%w%-_.:]+$') or #name > 64 then
    fail(400, "query parameter 'worker' must be 1-64 letters, digits or -_.:, got " .. str_format('%q', name:sub(1, 70)))
  end
  s:client()
  local o = s.ops
  local st = qstate(s, queue)
  subscribe(s, queue, st)
  if st.first then                       -- leases that ran out while nobody watched
    st.first = false
    ops_call(o.requeue_expired, o, queue)
  end
  local deadline = jobrt.monotime() + wait
  while true do
    local gen = st.gen
    local wid = str_format('http:%s:%s', name, jobrt.random_bytes(6):gsub('.', function(c)
      return str_format('%02x', byte(c)) end))
    local res = ops_call(o.reserve, o, queue, wid, 1, lease, true)
    arm(s, queue, st, res)
    local j = res.jobs[1]
    if j then
      if http.closed(req.handle) then      -- the client left during the poll: give it back
        o:release(queue, wid, { { id = j.id, attempt = j.attempt } })
        return
      end
      local args = json.decode(j.args)
      return s:reply(req, 200, { id = j.id, job = j.fn, args = args ~= nil and args or j.args, attempt = j.attempt,
        retries = j.retries, timeout = j.timeout, jobHash = j.hash, queue = queue,
        lease = _M.token(wid, j.attempt, j.id), lease_seconds = lease })
    end
    -- nothing now: wait for a wake-up (unless one came while reserve was on its way)
    while st.gen == gen do
      local left = deadline - jobrt.monotime()
      if left <= 0 or s.stopped or http.closed(req.handle) then
        return s:reply(req, 204, nil)
      end
      st.cond:wait(math.min(left, 1))      -- wakes at least once a second to see the client left
    end
  end
end

-- The lease of a job-level call: body {"lease": TOKEN, ...} -> body, worker id, attempt.
local function leased(req, id)
  api.check_name('the job id', id)
  local b = web.body_json(req, true)
  if type(b) ~= 'table' then fail(400, 'the body must be a JSON object {"lease": TOKEN, ...}') end
  local w, attempt, tid = _M.parse_token(b.lease)
  if not w then fail(400, '"lease" must be the lease token that reserve answered') end
  if tid ~= id then fail(400, str_format('the lease token belongs to job %s, not to job %s', tid, id)) end
  return b, w, attempt
end
-- the lease (one attempt of one job) a token names
local function lease_of(id, attempt) return { { id = id, attempt = attempt } } end

local LOST = 'lease lost: job %s is no longer held by this lease (it ran out and the job was given back, or the job was deleted): stop working on it'

local function renew(s, req, queue, id)
  api.check_name('the queue name', queue)
  local b, w, attempt = leased(req, id)
  local secs = b.seconds == nil and 30 or tonumber(b.seconds)
  if not secs or secs < 1 or secs > 3600 then fail(400, '"seconds" must be 1-3600') end
  s:client()
  local lost = ops_call(s.ops.renew, s.ops, queue, w, lease_of(id, attempt), secs)
  if #lost > 0 then fail(409, str_format(LOST, id)) end
  return s:reply(req, 200, { ok = true, lease_seconds = secs })
end

local function finish(s, req, queue, id, outcome)
  s:client()
  local sum = ops_call(s.ops.complete, s.ops, queue, outcome.worker, { outcome })
  if sum.flows then carry(s, queue, true) end        -- news for a parent (flows)
  if #sum.ignored > 0 then fail(409, str_format(LOST, id)) end
  return sum
end

local function complete(s, req, queue, id)
  api.check_name('the queue name', queue)
  local b, w, attempt = leased(req, id)
  local value = b.result == nil and 'null' or web.encode(b.result)
  local sum = finish(s, req, queue, id, { id = id, attempt = attempt, ok = true, value = value, worker = w })
  return s:reply(req, 200, { ok = true, cancelled = #sum.cancelled > 0 })
end

local function failjob(s, req, queue, id)
  api.check_name('the queue name', queue)
  local b, w, attempt = leased(req, id)
  local reason = b.error
  if reason ~= nil and type(reason) ~= 'string' then reason = web.encode(reason) end
  local tb = b.traceback
  if tb ~= nil and type(tb) ~= 'string' then fail(400, '"traceback" must be a string') end
  local sum = finish(s, req, queue, id, { id = id, attempt = attempt, ok = false, reason = reason or 'failed',
                                          exception = tb or '', worker = w })
  return s:reply(req, 200, { ok = true, retried = sum.retried > 0, failed = sum.failed > 0,
                             cancelled = #sum.cancelled > 0 })
end

local function release(s, req, queue, id)
  api.check_name('the queue name', queue)
  local _, w, attempt = leased(req, id)
  s:client()
  local n = ops_call(s.ops.release, s.ops, queue, w, lease_of(id, attempt))
  return s:reply(req, 200, { ok = true, released = n })
end

-- Ends the long polls and stops the timers of server s.
function _M.stop(s)
  for _, st in pairs(s.pull) do
    st.due:close()
    st.lease:close()
    st.cond:broadcast()
  end
end

function _M.install(w)
  web, fail = w, w.fail
  api = require 'jobrt.web.api'
  local route = w.route
  route('POST', '/api/queues/:q/reserve', reserve)
  route('POST', '/api/queues/:q/jobs/:id/renew', renew)
  route('POST', '/api/queues/:q/jobs/:id/complete', complete)
  route('POST', '/api/queues/:q/jobs/:id/fail', failjob)
  route('POST', '/api/queues/:q/jobs/:id/release', release)
end

return _M
