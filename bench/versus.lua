-- bench/versus.lua: the `versus` section of `make bench`: jobrt, BullMQ 6.7.0 and bee-queue
-- 2.0.0 side by side on the same workloads, against the one private redis-server of the run.
--   ./jobrt run bench/run.lua versus        (BENCH_REPS=N repetitions, default 3;
--                                            BENCH_SCALE=0.2 shrinks every workload)
-- Each repetition runs the three systems one after the other, in a rotating order (so that no
-- system always runs first or last while the machine's load drifts); each run is a process of
-- its own (bench/versus_jobrt.lua for jobrt, bench/peers/run.js for the peers) that starts
-- from FLUSHALL and prints its figures as JSON. The table gives the median and min-max of the
-- repetitions, then a block of ratios jobrt/peer with the direction of each figure (↑ higher is
-- better, ↓ lower is better) and whether the goal of issue 16 holds; everything, raw runs
-- included, is written to bench/results/versus-<time>.json.
-- The peers are installed on first use with `npm ci` in bench/peers (the lock file pins them);
-- without node/npm, or when the registry cannot be reached, they are skipped with a line that
-- says so, and jobrt runs alone.
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'
local cjson = require 'cjson'
local h = require 'tests.helpers'

local M = {}

local ROOT = os.getenv('PWD') or '.'
local PEERS_DIR = ROOT .. '/bench/peers'

-- The figures, in table order: key, label, direction (1: higher is better, -1: lower), format.
local FIGURES = {
  { 'enqueue_rate', 'bulk enqueue jobs/s (no-op jobs, chunks of 1000)', 1, '%.0f' },
  { 'process_rate', 'process jobs/s (1 worker process, conc. 50, records removed)', 1, '%.0f' },
  { 'redis_us_per_enqueue', 'redis-server CPU µs per enqueued job', -1, '%.1f' },
  { 'redis_us_per_process', 'redis-server CPU µs per processed job', -1, '%.1f' },
  { 'worker_us_per_job', 'worker CPU µs per job (default log level)', -1, '%.1f' },
  { 'cmds_per_job', 'Redis commands per job, one at a time', -1, '%.1f' },
  { 'start_p50', 'enqueue -> handler start p50 ms (idle worker)', -1, '%.2f' },
  { 'start_p99', 'enqueue -> handler start p99 ms (idle worker)', -1, '%.2f' },
  { 'seen_p50', 'enqueue -> result seen p50 ms', -1, '%.2f' },
  { 'seen_p99', 'enqueue -> result seen p99 ms', -1, '%.2f' },
  { 'late_p50', 'delayed-job lateness p50 ms', -1, '%.2f' },
  { 'late_p99', 'delayed-job lateness p99 ms', -1, '%.2f' },
  { 'late_max', 'delayed-job lateness max ms', -1, '%.2f' },
  { 'mem_per_job', 'Redis memory per waiting job, bytes', -1, '%.0f' },
}

-- The goals of issue 16, on the medians: name, figure, test(jobrt, bullmq, bee) -> bool.
local GOALS = {
  { 'bulk enqueue >= 2x bee-queue', 'enqueue_rate', function(j, _, b) return j >= 2 * b end },
  { 'process >= 5x BullMQ and >= 3x bee-queue', 'process_rate', function(j, m, b) return j >= 5 * m and j >= 3 * b end },
  { 'redis CPU per enqueued job <= 1/2 bee-queue', 'redis_us_per_enqueue', function(j, _, b) return j <= b / 2 end },
  { 'redis CPU per processed job <= 1/3 bee-queue', 'redis_us_per_process', function(j, _, b) return j <= b / 3 end },
  { 'worker CPU per job <= 1/5 bee-queue', 'worker_us_per_job', function(j, _, b) return j <= b / 5 end },
  { 'commands per job <= bee-queue', 'cmds_per_job', function(j, _, b) return j <= b end },
  { 'enqueue -> start p99 <= 1.0 ms', 'start_p99', function(j) return j <= 1.0 end },
  { 'delayed lateness p99 <= 2.0 ms', 'late_p99', function(j) return j <= 2.0 end },
  { 'memory per waiting job below both peers', 'mem_per_job', function(j, m, b) return j < m and j < b end },
}

local SYSTEMS = { 'jobrt', 'bullmq', 'bee' }
local NAMES = { jobrt = 'jobrt', bullmq = 'BullMQ 6.7.0', bee = 'bee-queue 2.0.0' }

local function sh(cmd)
  local f = io.popen(cmd .. ' 2>&1')
  local out = f:read('*a')
  local ok, _, code = f:close()
  return (ok == true or ok == 0) and (code == nil or code == 0), out
end

local function read(path)
  local f = io.open(path, 'rb')
  if not f then return nil end
  local s = f:read('*a')
  f:close()
  return s
end

-- Installs the peers (npm ci) unless node_modules matches the lock file already. Returns true,
-- or nil and why they cannot run.
local function install_peers()
  if not sh('command -v node >/dev/null && command -v npm >/dev/null') then
    return nil, 'node and npm are not installed (Debian: apt-get install nodejs npm; bee-queue 2.0.0 wants node >= 20)'
  end
  local lock = read(PEERS_DIR .. '/package-lock.json')
  if not lock then return nil, 'bench/peers/package-lock.json is missing' end
  local stamp = PEERS_DIR .. '/node_modules/.jobrt-lock'
  if read(stamp) == lock then return true end
  io.stdout:write('versus: installing BullMQ and bee-queue (npm ci in bench/peers)...\n')
  io.stdout:flush()
  local ok, out = sh("cd '" .. PEERS_DIR .. "' && timeout 300 npm ci --no-audit --no-fund --loglevel=error")
  if not ok then
    local last = out:gsub('%s+$', ''):match('([^\n]*)$') or ''
    return nil, '`npm ci` in bench/peers failed (is the npm registry reachable?): ' .. last
  end
  local f = assert(io.open(stamp, 'wb'))
  f:write(lock)
  f:close()
  return true
end

-- Runs one system's workloads; returns its figures (a table) or nil, err.
local function run_one(system, url, conf_json)
  local argv, file, cwd
  if system == 'jobrt' then
    file = h.jobrt_bin
    argv = { h.jobrt_bin, 'run', 'bench/versus_jobrt.lua', url, conf_json }
  else
    file = 'node'
    argv = { 'node', PEERS_DIR .. '/run.js', 'bench', system, url, conf_json }
    cwd = PEERS_DIR
  end
  local p, err = proc.spawn{ file = file, args = argv, cwd = cwd, capture = true }
  if not p then return nil, err end
  local guard = jobrt.timer()
  guard:start(900, function() p:kill('SIGKILL') end)
  local code = p:wait()
  guard:close()
  local out, errout = p:output()
  local line = out:match('({[^\n]*})%s*$')
  if code ~= 0 or not line then
    return nil, ('%s exited with %s: %s%s'):format(system, tostring(code), errout or '', out or '')
  end
  return cjson.decode(line)
end

local function median(t)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

local function fmt_num(f, v)
  if v == nil then return '-' end
  local s = f:format(v)
  -- thousands separators for big whole numbers
  local int, rest = s:match('^(%d+)(.*)$')
  if int and #int > 4 then s = int:reverse():gsub('(%d%d%d)', '%1,'):reverse():gsub('^,', '') .. rest end
  return s
end

-- s padded with spaces to n characters (UTF-8 aware: µ and the arrows are one character each)
local function pad(s, n)
  local len = #s:gsub('[\128-\191]', '')
  return len < n and s .. (' '):rep(n - len) or s
end

function M.run(server)
  local reps = tonumber(os.getenv('BENCH_REPS')) or 3
  local scale = tonumber(os.getenv('BENCH_SCALE')) or 1
  local conf = { memory = math.floor(100000 * scale), bulk = math.floor(50000 * scale), chunk = 1000,
                 one = math.floor(1000 * scale), delayed = math.floor(2000 * scale), delay_ms = 200,
                 concurrency = 50 }
  local conf_json = cjson.encode(conf)
  local systems = { 'jobrt' }
  local ok, why = install_peers()
  if ok then
    systems = SYSTEMS
  else
    io.stdout:write('versus: BullMQ and bee-queue skipped: ', why, '\n')
  end
  io.stdout:write(('versus: %d repetitions, %s, one redis-server (%s)\n'):format(reps, conf_json, server.url))
  io.stdout:flush()

  local runs = {}            -- runs[system] = { figures... }
  for _, s in ipairs(systems) do runs[s] = {} end
  local failures = 0
  for rep = 1, reps do
    for k = 0, #systems - 1 do
      local s = systems[(rep - 1 + k) % #systems + 1]
      local t0 = jobrt.monotime()
      local res, err = run_one(s, server.url, conf_json)
      if res then
        runs[s][#runs[s] + 1] = res
        io.stdout:write(('  rep %d %-16s %5.1fs  enqueue %s/s, process %s/s, start p99 %.2f ms\n'):format(
          rep, NAMES[s], jobrt.monotime() - t0, fmt_num('%.0f', res.enqueue_rate), fmt_num('%.0f', res.process_rate),
          res.start_p99 or -1))
      else
        failures = failures + 1
        io.stdout:write(('  rep %d %-16s FAILED: %s\n'):format(rep, NAMES[s], tostring(err)))
      end
      io.stdout:flush()
    end
  end

  -- medians, min and max
  local summary = {}
  for _, s in ipairs(systems) do
    summary[s] = {}
    for _, f in ipairs(FIGURES) do
      local vals = {}
      for _, r in ipairs(runs[s]) do if r[f[1]] then vals[#vals + 1] = r[f[1]] end end
      if #vals > 0 then
        summary[s][f[1]] = { median = median(vals), min = math.min(unpack(vals)), max = math.max(unpack(vals)) }
      end
    end
  end

  local w = io.stdout
  w:write('\n' .. pad(('figure (median, min-max of %d runs)'):format(reps), 64))
  for _, s in ipairs(systems) do w:write('| ' .. pad(NAMES[s], 28)) end
  w:write('\n')
  for _, f in ipairs(FIGURES) do
    w:write(pad(f[2] .. (f[3] > 0 and ' ↑' or ' ↓'), 64))
    for _, s in ipairs(systems) do
      local v = summary[s][f[1]]
      local cell = v and ('%s (%s-%s)'):format(fmt_num(f[4], v.median), fmt_num(f[4], v.min), fmt_num(f[4], v.max)) or '-'
      w:write('| ' .. pad(cell, 28))
    end
    w:write('\n')
  end

  local ratios, goals = {}, {}
  if #systems > 1 then
    w:write('\nratios jobrt/peer on the medians (↑: above 1 is jobrt better; ↓: below 1 is jobrt better)\n')
    for _, f in ipairs(FIGURES) do
      local j = summary.jobrt[f[1]]
      w:write(pad(f[2] .. (f[3] > 0 and ' ↑' or ' ↓'), 64))
      ratios[f[1]] = {}
      for _, s in ipairs({ 'bullmq', 'bee' }) do
        local p = summary[s][f[1]]
        local r = (j and p and p.median ~= 0) and j.median / p.median or nil
        ratios[f[1]][s] = r
        w:write('| ' .. pad(r and ('%.2f vs %s'):format(r, NAMES[s]) or '-', 28))
      end
      w:write('\n')
    end
    w:write('\ngoals (issue 16)\n')
    for _, g in ipairs(GOALS) do
      local function m(s) return summary[s][g[2]] and summary[s][g[2]].median end
      local held = m('jobrt') and m('bullmq') and m('bee') and g[3](m('jobrt'), m('bullmq'), m('bee')) or false
      goals[#goals + 1] = { goal = g[1], figure = g[2], holds = held }
      w:write(('  %-4s %s\n'):format(held and 'yes' or 'NO', g[1]))
    end
  end

  -- the same medians as a Markdown table, for README "Figures" (which is regenerated from it)
  local md = {}
  if #systems > 1 then
    local goal_of = {}
    for i, g in ipairs(GOALS) do goal_of[g[2]] = goals[i] end
    md[1] = ('| figure (median (min–max) of %d runs) | jobrt | BullMQ 6.7.0 | bee-queue 2.0.0 | goal (issue 16) |'):format(reps)
    md[2] = '| --- | --- | --- | --- | --- |'
    for _, f in ipairs(FIGURES) do
      local cells = { f[2] .. (f[3] > 0 and ' ↑' or ' ↓') }
      for _, s in ipairs(SYSTEMS) do
        local v = summary[s] and summary[s][f[1]]
        cells[#cells + 1] = v and ('%s (%s–%s)'):format(fmt_num(f[4], v.median), fmt_num(f[4], v.min), fmt_num(f[4], v.max)) or '-'
      end
      local g = goal_of[f[1]]
      cells[#cells + 1] = g and ((g.holds and 'holds: ' or 'missed: ') .. g.goal) or ''
      md[#md + 1] = '| ' .. table.concat(cells, ' | ') .. ' |'
    end
    w:write('\nREADME table (Markdown)\n', table.concat(md, '\n'), '\n')
  end

  os.execute("mkdir -p '" .. ROOT .. "/bench/results'")
  local path = ('%s/bench/results/versus-%s.json'):format(ROOT, os.date('!%Y%m%dT%H%M%SZ'))
  if #md > 0 then
    local mf = io.open((path:gsub('%.json$', '.md')), 'wb')
    if mf then mf:write(table.concat(md, '\n'), '\n'); mf:close() end
  end
  local f = io.open(path, 'wb')
  if f then
    f:write(cjson.encode({ conf = conf, reps = reps, systems = systems, runs = runs, summary = summary,
                           ratios = ratios, goals = goals, peers_skipped = not ok and why or nil,
                           time = os.time() }), '\n')
    f:close()
    w:write('\nwritten: bench/results/', path:match('[^/]+$'), '\n')
  end
  w:flush()
  if failures > 0 then error(('%d run(s) failed'):format(failures)) end
end

return M
