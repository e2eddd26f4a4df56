-- jobrt.metrics: what workers record in Redis for `jobrt web`'s /metrics and its chart, so any
-- web process sees every worker's jobs (keys documented in lua-server-scripts/README.md):
--
--   jobrt:{Q}:metrics             hash: "le:<bound>" -> runs whose handler took <= bound seconds
--                                 and more than the bound before it (not cumulative), "sum" ->
--                                 total seconds (HINCRBYFLOAT), "count" -> runs
--   jobrt:{Q}:metrics:<minute>    hash: "completed", "failed" -> runs that ended in that Unix
--                                 minute (floor(time / 60)); expires after 2 hours
--
--   metrics.BUCKETS                       the bounds, as strings ("0.005" ... "300", "+Inf")
--   local acc = metrics.new()              an accumulator (the worker keeps one)
--   acc:add(queue, outcomes[, skip])       counts outcomes in memory: { {id=, ok=bool,
--                                          duration=seconds}... } (no duration: not timed);
--                                          skip: set of ids not to count (results not stored)
--   acc:flush(r) -> true | nil, err        sends what was counted since the last flush and
--                                          forgets it (kept for the next flush when Redis fails);
--                                          all commands leave in one write; yields until answered
--   metrics.key(queue), metrics.minute_key(queue, minute)
-- The worker flushes once a second and when it stops, so a busy worker adds a handful of
-- commands per second, not per batch of jobs.
local jobrt = require 'jobrt'

local floor, str_format, tostring, pairs, ipairs, next, setmetatable, unpack =
  math.floor, string.format, tostring, pairs, ipairs, next, setmetatable, unpack

local _M = {}

_M.BUCKETS = { '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30',
               '60', '300', '+Inf' }
local BOUNDS = {}
for i, b in ipairs(_M.BUCKETS) do BOUNDS[i] = tonumber(b) or math.huge end

_M.MINUTE_TTL = 7200

function _M.key(queue) return 'jobrt:{' .. queue .. '}:metrics' end
function _M.minute_key(queue, minute) return 'jobrt:{' .. queue .. '}:metrics:' .. minute end

-- The bucket (its string bound) a duration falls in.
local function bucket(d)
  for i = 1, #BOUNDS do
    if d <= BOUNDS[i] then return _M.BUCKETS[i] end
  end
  return '+Inf'
end
_M.bucket = bucket

local Acc = {}
Acc.__index = Acc

function _M.new()
  return setmetatable({ q = {} }, Acc)
end

-- the counts of one queue: { le = {bound = n}, sum =, count =, minutes = {minute = {ok, failed}} }
local function qcounts(self, queue)
  local c = self.q[queue]
  if not c then
    c = { le = {}, sum = 0, count = 0, minutes = {} }
    self.q[queue] = c
  end
  return c
end

function Acc:add(queue, outcomes, skip)
  local c
  local minute = floor(jobrt.now() / 60)
  for i = 1, #outcomes do
    local o = outcomes[i]
    if not (skip and skip[o.id]) then
      c = c or qcounts(self, queue)
      local m = c.minutes[minute]
      if not m then
        m = { 0, 0 }
        c.minutes[minute] = m
      end
      if o.ok then m[1] = m[1] + 1 else m[2] = m[2] + 1 end
      local d = o.duration
      if d then
        local b = bucket(d)
        c.le[b] = (c.le[b] or 0) + 1
        c.sum = c.sum + d
        c.count = c.count + 1
      end
    end
  end
end

function Acc:flush(r)
  local pending = self.q
  if next(pending) == nil then return true end
  self.q = {}
  local calls = {}
  for queue, c in pairs(pending) do
    local key = _M.key(queue)
    for b, n in pairs(c.le) do calls[#calls + 1] = { 'HINCRBY', key, 'le:' .. b, n } end
    if c.count > 0 then
      calls[#calls + 1] = { 'HINCRBYFLOAT', key, 'sum', str_format('%.6f', c.sum) }
      calls[#calls + 1] = { 'HINCRBY', key, 'count', c.count }
    end
    for minute, m in pairs(c.minutes) do
      local mkey = _M.minute_key(queue, minute)
      if m[1] > 0 then calls[#calls + 1] = { 'HINCRBY', mkey, 'completed', m[1] } end
      if m[2] > 0 then calls[#calls + 1] = { 'HINCRBY', mkey, 'failed', m[2] } end
      calls[#calls + 1] = { 'EXPIRE', mkey, _M.MINUTE_TTL }
    end
  end
  local wg = jobrt.waitgroup()
  local first_err, first_code
  for _, call in ipairs(calls) do
    wg:spawn(function()
      local v, err, code = r:call(unpack(call))
      if v == nil and not first_err then first_err, first_code = tostring(err), code end
    end)
  end
  wg:wait()
  if first_err then
    -- nothing was counted twice only if nothing went through; a partial failure may lose a
    -- flush's counts, which the metrics accept (they are not the job records)
    if first_code == 'ECONN' and next(self.q) == nil then self.q = pending end
    return nil, first_err
  end
  return true
end

return _M
