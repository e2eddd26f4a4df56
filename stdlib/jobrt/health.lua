-- jobrt.health: `jobrt health [QUEUE...]`, the probe for containers, orchestrators and systemd.
--
-- Exit 0 when Redis answers PING (a Redis Cluster: CLUSTER INFO says cluster_state:ok) and, for
-- each QUEUE named, at least one live worker serves it;
-- exit 1 otherwise, with one line on stderr saying what is wrong; exit 2 for a usage error.
-- A worker is live while its registry entry has not expired (jobrt.worker register_self renews
-- it with each heartbeat, every 2 s, for 7 s; the registry, jobrt.ops workers(), lists only
-- those), so the answer rests on the expiry Redis keeps, not on this machine's clock.
-- Everything happens within --timeout seconds (default 5): a probe never hangs.
--   main(argv, cmd) -> exit status
local jobrt = require 'jobrt'
local args = require 'jobrt.args'
local redis = require 'jobrt.redis'
local client = require 'jobrt.client'

local io, pairs, ipairs, tostring, concat, sort, fmt = io, pairs, ipairs, tostring, table.concat, table.sort, string.format

local _M = {}

local USAGE = [[
usage: jobrt health [QUEUE...] [--timeout SECONDS]

Exits 0 when Redis answers and, for each QUEUE named, a live worker serves it; otherwise exits
1 with one line on stderr saying what is wrong. For container and orchestrator probes, e.g.
    HEALTHCHECK CMD jobrt health MAIL          (Docker)
A worker is live while its registry entry (jobrt:{workers}) has not expired: it renews the
entry every 2 seconds and the entry expires 7 seconds after the last renewal.

Options:
  --timeout SECONDS  answer within this time, failing if Redis has not (default 5)
  --redis URL        redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH,
                     redis+sentinel://HOST:PORT[,...]/MASTERNAME or
                     redis+cluster://HOST:PORT[,...] (env JOBRT_REDIS; see the
                     README's "Addresses"); default: ./.jobrt/redis.sock (this directory's
                     private Redis) if it exists, else redis://127.0.0.1:6379
]] .. redis.CLI_HELP .. [[
  --log-level LEVEL, --log-format F   as for every command
  -h, --help         this text
Exit status: 0 healthy, 1 not healthy (the line says why), 2 usage error.
]]

local SPEC = { redis = 'string', timeout = 'seconds' }
for k, v in pairs(args.LOGGING) do SPEC[k] = v end
for k, v in pairs(redis.CLI_OPTIONS) do SPEC[k] = v end       -- --tls-*, as every command

local gave_up = false     -- the deadline passed: the check may still end, but says nothing

local function say(line)
  if gave_up then return end
  io.stderr:write('jobrt health: ', line, '\n')
  io.stderr:flush()
end

-- The queues each live worker serves: { [queue] = count }, number of live workers; or nil, err.
-- The registry (jobrt.ops register/workers) lists only workers whose entry has not expired.
local function live_queues(r)
  local q, err = client.new(r)
  if not q then return nil, err end
  local ok, workers = pcall(q.workers, q)
  if not ok then return nil, workers end
  local served = {}
  for _, w in ipairs(workers) do
    for name in tostring(w.queues or ''):gmatch('[^,]+') do served[name] = (served[name] or 0) + 1 end
  end
  return served, #workers
end

-- The address a check uses: the given one, $JOBRT_REDIS, else what every other command uses
-- with no address (jobrt.localredis default_url: ./.jobrt/redis.sock, else redis://127.0.0.1:6379).
-- Returns url, or nil and why none can be used.
local function resolve(url)
  if url then return url end
  if os.getenv('JOBRT_REDIS') then return os.getenv('JOBRT_REDIS') end
  return require('jobrt.localredis').default_url()
end

local function check(url, queues)
  local rerr
  url, rerr = resolve(url)
  if not url then
    say(tostring(rerr))
    return 1
  end
  local where = client.describe(url)
  local r, err, code = redis.connect(url)
  if not r then
    if require('jobrt.localredis').is_local(url) then
      say(require('jobrt.localredis').NOT_RUNNING)
      return 1
    end
    say((tostring(err):gsub('^%u+: ', '')) ..    -- "cannot connect to redis at ADDR: why"
      (code == 'ECONNREFUSED' and ': start redis-server there, or pass --redis URL (or set JOBRT_REDIS)' or ''))
    return 1
  end
  local pong, perr = r:call('PING')
  if pong ~= 'PONG' then
    r:close()
    say(fmt('redis at %s is not ready: %s', where, tostring(perr or pong)))
    return 1
  end
  if r.each_primary then
    -- a cluster: it must serve every slot (a slot without a primary is a queue nobody can use)
    local info, ierr = r:call('CLUSTER', 'INFO')
    local state = type(info) == 'string' and info:match('cluster_state:(%w+)')
    if state ~= 'ok' then
      r:close()
      say(fmt('the cluster at %s is not ok: %s', where, state and ('cluster_state:' .. state .. ' ('
        .. (info:match('cluster_slots_ok:(%d+)') or '?') .. ' of 16384 slots served)') or tostring(ierr)))
      return 1
    end
  end
  if #queues == 0 then
    r:close()
    if not gave_up then io.stdout:write(fmt('ok: redis at %s answers\n', where)) end
    return 0
  end
  local served, live = live_queues(r)
  r:close()
  if not served then
    say(fmt('redis at %s cannot list the workers: %s', where, tostring(live)))
    return 1
  end
  local missing, parts = {}, {}
  for _, q in ipairs(queues) do
    if served[q] then
      parts[#parts + 1] = fmt('%s by %d', q, served[q])
    else
      missing[#missing + 1] = "'" .. q .. "'"
    end
  end
  if #missing > 0 then
    local others = {}
    for q in pairs(served) do others[#others + 1] = q end
    sort(others)
    say(fmt('no live worker serves queue%s %s (%d live worker%s%s)', #missing > 1 and 's' or '',
      concat(missing, ', '), live, live == 1 and '' or 's',
      #others > 0 and (', serving ' .. concat(others, ', ')) or ''))
    return 1
  end
  if not gave_up then io.stdout:write(fmt('ok: redis at %s answers; served: %s\n', where, concat(parts, ', '))) end
  return 0
end

function _M.main(argv, cmd)
  local name = 'jobrt ' .. (cmd or 'health')
  local opts, pos = args.parse(argv, SPEC, name)
  if not opts then
    io.stderr:write(pos, '\n')
    return 2
  end
  if opts.help then
    io.stdout:write(USAGE)
    return 0
  end
  local lok, lerr = args.apply_logging(opts, name)
  if not lok then
    io.stderr:write(lerr, '\n')
    return 2
  end
  local url, uerr = redis.address(opts.redis)
  if url == false then
    io.stderr:write(name, ': ', uerr, '\n')
    return 2
  end
  local tok, terr = redis.use_cli_tls(opts, url)
  if not tok then
    io.stderr:write(name, ': ', terr, '\n')
    return 2
  end
  for _, q in ipairs(pos) do
    if q == '' or q:find('^%-') then
      io.stderr:write(fmt("%s: '%s' is not a queue name (see %s --help)\n", name, q, name))
      return 2
    end
  end
  local timeout = opts.timeout or 5
  if timeout <= 0 then
    io.stderr:write(name, ': --timeout wants seconds > 0\n')
    return 2
  end
  -- the whole check runs in its own coroutine; the deadline ends the process if it has not
  local done, code = jobrt.cond(), nil
  jobrt.spawn(function()
    code = check(url, pos)
    done:signal()
  end)
  if code == nil then
    local ok = done:wait(timeout)
    if not ok then
      say(fmt('no answer from redis at %s within %g s', client.describe(resolve(url)), timeout))
      gave_up = true
      jobrt.exit(1)
      return 1
    end
  end
  return code
end

return _M
