-- jobrt.web.metrics: GET /metrics in the Prometheus text format (version 0.0.4), and
-- GET /api/history for the dashboard's chart.
--
-- Families (names and units after https://prometheus.io/docs/practices/naming/):
--   jobrt_jobs_completed_total{queue}   counter  jobs that succeeded (stats "completed")
--   jobrt_jobs_failed_total{queue}      counter  jobs that failed for good (stats "total-failed")
--   jobrt_jobs_retried_total{queue}     counter  failed attempts given another try
--   jobrt_leases_expired_total{queue}   counter  leases that ran out (a worker died or stalled)
--   jobrt_queue_jobs{queue,state}       gauge    jobs now waiting|delayed|parked|executing|failed
--   jobrt_job_duration_seconds{queue}   histogram  handler run time, kept by the workers in the
--                                       hash jobrt:{Q}:metrics (lua-server-scripts/README.md)
--   jobrt_workers                       gauge    workers alive (registry entries not expired)
--   jobrt_redis_roundtrip_seconds       gauge    one PING from this process, measured per scrape
--   jobrt_up                            gauge    1 when Redis answered this scrape
-- /api/history?minutes=N (1-120, default 60): {"minutes": [unix minute...], "completed": [n...],
-- "failed": [n...], "queues": {Q: {"completed": [...], "failed": [...]}}} from the per-minute
-- hashes jobrt:{Q}:metrics:<unix minute> the workers keep.
local jobrt = require 'jobrt'
local wmetrics = require 'jobrt.metrics'

local pairs, ipairs, tostring, tonumber, type = pairs, ipairs, tostring, tonumber, type
local str_format, concat, sort, floor = string.format, table.concat, table.sort, math.floor

local _M = {}
local web, fail

_M.BUCKETS = wmetrics.BUCKETS
_M.metrics_key = wmetrics.key
_M.minute_key = wmetrics.minute_key

-- A label value as the text format wants it: backslash, double quote and newline escaped.
local function label(v)
  return (tostring(v):gsub('[\\"\n]', { ['\\'] = '\\\\', ['"'] = '\\"', ['\n'] = '\\n' }))
end

local function num(v)
  v = tonumber(v) or 0
  if v == floor(v) and v > -1e15 and v < 1e15 then return str_format('%d', v) end
  return str_format('%.17g', v)
end

local function flat_to_table(flat)
  local t = {}
  if type(flat) ~= 'table' then return t end
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local STATES = { { 'waiting', 'pending' }, { 'delayed', 'delayed' }, { 'parked', 'parked' },
                 { 'executing', 'executing' }, { 'failed', 'failed' } }

local function scrape(s, req)
  local out = {}
  local function fam(name, kind, help)
    out[#out + 1] = '# HELP ' .. name .. ' ' .. help
    out[#out + 1] = '# TYPE ' .. name .. ' ' .. kind
  end
  local q = s.q
  local stats, workers, rtt
  if q then
    local t0 = jobrt.monotime()
    local pong = s.r2:call('PING')
    if pong then rtt = jobrt.monotime() - t0 end
    local ok, st = pcall(q.stats, q)
    if ok then stats = st end
    local okw, w = pcall(q.workers, q)
    if okw then workers = w end
  end
  local names = {}
  for name, c in pairs(stats or {}) do
    if not c.error then names[#names + 1] = name end
  end
  sort(names)
  -- the workers' histograms, one HGETALL per queue, all in flight at once
  local hist = {}
  if #names > 0 then
    local wg = jobrt.waitgroup()
    for _, name in ipairs(names) do
      wg:spawn(function()
        hist[name] = flat_to_table(s.r2:call('HGETALL', _M.metrics_key(name)))
      end)
    end
    wg:wait(5)
  end
  local counters = {
    { 'jobrt_jobs_completed_total', 'completed', 'Jobs that finished successfully.' },
    { 'jobrt_jobs_failed_total', 'total_failed', 'Jobs that failed for good (after their retries).' },
    { 'jobrt_jobs_retried_total', 'retried', 'Failed attempts that were given another try.' },
    { 'jobrt_leases_expired_total', 'expired', 'Leases that ran out because a worker stopped renewing them.' },
  }
  for _, c in ipairs(counters) do
    fam(c[1], 'counter', c[3])
    for _, name in ipairs(names) do
      out[#out + 1] = str_format('%s{queue="%s"} %s', c[1], label(name), num(stats[name][c[2]]))
    end
  end
  fam('jobrt_queue_jobs', 'gauge', 'Jobs in the queue now, by state.')
  for _, name in ipairs(names) do
    for _, st in ipairs(STATES) do
      out[#out + 1] = str_format('jobrt_queue_jobs{queue="%s",state="%s"} %s', label(name), st[1],
        num(stats[name][st[2]]))
    end
  end
  fam('jobrt_job_duration_seconds', 'histogram', 'Run time of job handlers, as the workers measured it.')
  for _, name in ipairs(names) do
    local h = hist[name] or {}
    local cum = 0
    for _, le in ipairs(_M.BUCKETS) do
      cum = cum + (tonumber(h['le:' .. le]) or 0)
      out[#out + 1] = str_format('jobrt_job_duration_seconds_bucket{queue="%s",le="%s"} %s', label(name), le, num(cum))
    end
    out[#out + 1] = str_format('jobrt_job_duration_seconds_sum{queue="%s"} %s', label(name), num(h.sum or 0))
    out[#out + 1] = str_format('jobrt_job_duration_seconds_count{queue="%s"} %s', label(name), num(cum))
  end
  fam('jobrt_workers', 'gauge', 'Workers alive (registry entries that have not expired).')
  out[#out + 1] = 'jobrt_workers ' .. num(workers and #workers or 0)
  fam('jobrt_redis_roundtrip_seconds', 'gauge', 'Time of one PING to Redis from jobrt web, measured for this scrape.')
  out[#out + 1] = 'jobrt_redis_roundtrip_seconds ' .. (rtt and str_format('%.6f', rtt) or 'NaN')
  fam('jobrt_up', 'gauge', '1 when Redis answered for this scrape, else 0.')
  out[#out + 1] = 'jobrt_up ' .. ((stats and rtt) and '1' or '0')
  out[#out + 1] = ''
  return s:reply(req, 200, concat(out, '\n'), nil, 'text/plain; version=0.0.4; charset=utf-8')
end

local function history(s, req)
  local n = tonumber(req.query.minutes or '60')
  if not n or n ~= floor(n) or n < 1 or n > 120 then
    fail(400, "query parameter 'minutes' must be a whole number from 1 to 120")
  end
  local q = s:client()
  local ok, stats = pcall(q.stats, q)
  if not ok then fail(503, tostring(stats)) end
  local now_min = floor(jobrt.now() / 60)
  local minutes = web.array({})
  for i = n - 1, 0, -1 do minutes[#minutes + 1] = now_min - i end
  local per, total_c, total_f = {}, web.array({}), web.array({})
  for i = 1, n do total_c[i], total_f[i] = 0, 0 end
  local wg = jobrt.waitgroup()
  for name in pairs(stats) do
    local c, f = web.array({}), web.array({})
    per[name] = { completed = c, failed = f }
    for i, m in ipairs(minutes) do
      c[i], f[i] = 0, 0
      wg:spawn(function()
        local v = s.r2:call('HMGET', _M.minute_key(name, m), 'completed', 'failed')
        if type(v) == 'table' then
          c[i] = tonumber(v[1]) or 0
          f[i] = tonumber(v[2]) or 0
        end
      end)
    end
  end
  wg:wait(5)
  for _, p in pairs(per) do
    for i = 1, n do
      total_c[i] = total_c[i] + p.completed[i]
      total_f[i] = total_f[i] + p.failed[i]
    end
  end
  return s:reply(req, 200, { minutes = minutes, completed = total_c, failed = total_f, queues = per })
end

function _M.install(w)
  web, fail = w, w.fail
  w.route('GET', '/metrics', scrape)
  w.route('GET', '/api/history', history)
end

return _M
