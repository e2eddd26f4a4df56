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
--   metrics.record(r, queue, outcomes[, skip]) -> true | nil, err
--       outcomes: { {ok=bool, duration=seconds}... } (those without duration are not timed);
--       skip: set of ids not to count (results Redis did not store). All commands are sent at
--       once (the connection writes calls made in one loop turn together) and yield until
--       answered; must run in a coroutine.
--   metrics.key(queue), metrics.minute_key(queue, minute)
local jobrt = require 'jobrt'

local floor, str_format, tostring = math.floor, string.format, tostring

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

function _M.record(r, queue, outcomes, skip)
  local counts, sum, timed, ok_n, failed_n = {}, 0, 0, 0, 0
  for i = 1, #outcomes do
    local o = outcomes[i]
    if not (skip and skip[o.id]) then
      if o.ok then ok_n = ok_n + 1 else failed_n = failed_n + 1 end
      local d = o.duration
      if d then
        local b = bucket(d)
        counts[b] = (counts[b] or 0) + 1
        sum = sum + d
        timed = timed + 1
      end
    end
  end
  if ok_n + failed_n == 0 then return true end
  local key = _M.key(queue)
  local mkey = _M.minute_key(queue, floor(jobrt.now() / 60))
  local calls = {}
  for b, n in pairs(counts) do calls[#calls + 1] = { 'HINCRBY', key, 'le:' .. b, n } end
  if timed > 0 then
    calls[#calls + 1] = { 'HINCRBYFLOAT', key, 'sum', str_format('%.6f', sum) }
    calls[#calls + 1] = { 'HINCRBY', key, 'count', timed }
  end
  if ok_n > 0 then calls[#calls + 1] = { 'HINCRBY', mkey, 'completed', ok_n } end
  if failed_n > 0 then calls[#calls + 1] = { 'HINCRBY', mkey, 'failed', failed_n } end
  calls[#calls + 1] = { 'EXPIRE', mkey, _M.MINUTE_TTL }
  local wg = jobrt.waitgroup()
  local first_err
  for _, c in ipairs(calls) do
    wg:spawn(function()
      local v, err = r:call(unpack(c))
      if v == nil and not first_err then first_err = tostring(err) end
    end)
  end
  wg:wait()
  if first_err then return nil, first_err end
  return true
end

return _M
