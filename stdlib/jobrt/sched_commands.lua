-- jobrt.sched_commands: the shell commands for scheduling, flow control and queue maintenance
-- (DESIGN "Scheduling and flow control"), on the client calls of jobrt.client_sched:
--   jobrt cron add NAME QUEUE JOB 'EXPR' [JSON-ARGS] [--tz ZONE] [--id-prefix P] [--missed once|skip]
--   jobrt cron list [--json]      jobrt cron delete NAME
--   jobrt pause QUEUE             jobrt resume QUEUE
--   jobrt limit QUEUE [--rate N --per SECONDS] [--max-active N] [--clear]
--   jobrt queues [--json]         jobrt drain QUEUE          jobrt obliterate QUEUE [--force]
-- main(argv, cmd) returns the exit status: 0 done, 1 failed (Redis, no such queue or entry, a
-- live worker serves the queue), 2 usage error. Every problem is one line on stderr naming it
-- and the fix.
local jobrt = require 'jobrt'
local commands = require 'jobrt.commands'
local cron = require 'jobrt.cron'
local client_sched = require 'jobrt.client_sched'
local json = require 'jobrt.json'

local io, type, pairs, ipairs, tostring, pcall, setmetatable = io, type, pairs, ipairs, tostring, pcall, setmetatable
local str_format, concat = string.format, table.concat

local U = commands.util
local parse, connect, errline, missing, too_many, bare = U.parse, U.connect, U.errline, U.missing, U.too_many, U.bare
local bad_name = U.bad_name
local table_text, to_json, ARRAY = U.table_text, U.to_json, U.ARRAY


local _M = {}

local function utc(t)
  if not t then return '-' end
  return os.date('!%Y-%m-%d %H:%M:%S', math.floor(t)) .. 'Z'
end

-- Runs f(q) with a connected client; returns f's status (raised errors: status 1 and the message).
local function with_client(cmd, o, f)
  local q, qcode = connect(cmd, o)
  if not q then return qcode end
  local ok, rc = pcall(f, q)
  q:close()
  if not ok then
    errline(cmd, bare(rc))
    return 1
  end
  return rc
end

-- ---- cron -----------------------------------------------------------------------

local CRON_USAGE = [[
usage: jobrt cron add NAME QUEUE JOB 'EXPR' [JSON-ARGS] [--tz ZONE] [--id-prefix P] [--missed once|skip] [--hash H]
       jobrt cron list [--json]
       jobrt cron delete NAME [--queue QUEUE]

Repeatable jobs: every tick of EXPR, one JOB with JSON-ARGS (default {}) is enqueued into QUEUE,
exactly once however many workers run (its id is P followed by the tick in Unix seconds; P
defaults to cron:NAME:). The workers serving QUEUE compute the ticks; with none running, nothing
is enqueued.
EXPR: five fields (minute hour day-of-month month day-of-week: '*/15 9-17 * * mon-fri'), or
@hourly, @daily, @weekly, @monthly, @yearly, or '@every 30s' (units d h m s; ticks at the
multiples of the duration since 1970-01-01 UTC). Quote it.
Options (add):
  --tz ZONE          the zone EXPR's times are in (tz database names: Europe/Berlin; default UTC).
                     Daylight saving as cronie: a fixed time the clock skips runs at the change, a
                     repeated one runs once; '*' hours or minutes follow the clock
  --id-prefix P      job ids are P<tick seconds> (default cron:NAME:)
  --missed once|skip ticks that passed while no worker ran: one catch-up run (once, the default),
                     or none (skip: only a tick at most 60 s late runs)
  --hash H           the jobs' jobHash (LBQUEUE, DELQUEUE; default NAME): on an LBQUEUE a tick
                     whose previous job still waits merges into it
Adding NAME again replaces it (same schedule: its ticks go on; another: they start again now).
cron list shows each entry's LAST TICK (the latest tick enqueued or skipped; for a new entry, the
time it was made) and NEXT TICK.
Job files declare entries too: { QUEUE = { job = { handler = fn, cron = '0 * * * *' } } } makes
the entry QUEUE.job, owned by the workers serving QUEUE.
]]

local function cron_add(cmd, argv)
  local o, pos = parse(cmd, argv, { tz = 'string', ['id-prefix'] = 'string', missed = 'string', hash = 'string' }, CRON_USAGE)
  if not o then return pos end
  local synopsis = "NAME QUEUE JOB 'EXPR' [JSON-ARGS]"
  local name, queue, job, expr, args = pos[2], pos[3], pos[4], pos[5], pos[6]
  if not name then return missing(cmd, 'NAME', synopsis) end
  if not queue then return missing(cmd, 'QUEUE', synopsis) end
  if not job then return missing(cmd, 'JOB', synopsis) end
  if not expr then return missing(cmd, "'EXPR'", synopsis) end
  local rc = bad_name(cmd, queue)
  if rc then return rc end
  if pos[7] then
    return too_many(cmd, pos[7], ": quote EXPR and JSON-ARGS in single quotes so the shell keeps each one word")
  end
  local s, perr = cron.parse(expr)
  if not s then
    errline(cmd, perr)
    return 2
  end
  args = args or '{}'
  local okj, jerr, jcode = json.check(args, { max_bytes = json.MAX_PAYLOAD })
  if not okj then
    errline(cmd, U.json_problem('JSON-ARGS', jerr, jcode) .. (jcode == 'EJSON' and U.QUOTE_HINT or ''))
    return 2
  end
  local opts = { tz = o.tz, id_prefix = o['id-prefix'], missed = o.missed, jobHash = o.hash }
  local okc, cerr = pcall(client_sched.cron_entry, name, queue, job, expr, args, opts)
  if not okc then
    errline(cmd, (bare(cerr):gsub("option 'id_prefix'", '--id-prefix'):gsub("option 'missed'", '--missed')
      :gsub("option 'tz'", '--tz'):gsub("option 'jobHash'", '--hash')))
    return 2
  end
  return with_client(cmd, o, function(q)
    local res, nxt = q:addCron(name, queue, job, expr, args, opts)
    io.stdout:write(str_format("cron entry '%s' %s: %s job %s into queue '%s', %s%s; next tick %s\n", name, res,
      expr, job, queue, o.tz or 'UTC', (o.missed == 'skip') and ', missed ticks skipped' or '', utc(nxt)))
    return 0
  end)
end

-- The two short answers of a listing command: with --json the rows as a JSON array, with no
-- rows the line `none` (what to do instead). Returns true when it answered.
local function listed(o, rows, none)
  if o.json then
    io.stdout:write(to_json(setmetatable(rows, ARRAY), '  '), '\n')
    return true
  end
  if #rows == 0 then
    io.stdout:write(none, '\n')
    return true
  end
  return false
end

local function cron_list(cmd, argv)
  local o, pos = parse(cmd, argv, { json = 'flag' }, CRON_USAGE)
  if not o then return pos end
  if pos[2] then return too_many(cmd, pos[2]) end
  return with_client(cmd, o, function(q)
    local rows = q:listCron()
    if listed(o, rows, "no cron entries: add one with  jobrt cron add NAME QUEUE JOB 'EXPR'") then return 0 end
    local t = {}
    for _, r in ipairs(rows) do
      t[#t + 1] = { r.name, r.queue, tostring(r.job), tostring(r.schedule), tostring(r.tz), tostring(r.args),
        tostring(r.missed), r.source == 'file' and ('file ' .. tostring(r.file or '')) or 'cli', utc(r.last), utc(r.next) }
    end
    io.stdout:write(table_text({ 'NAME', 'QUEUE', 'JOB', 'SCHEDULE', 'TZ', 'ARGS', 'MISSED', 'SOURCE', 'LAST TICK', 'NEXT TICK' },
      t, {}))
    return 0
  end)
end

local function cron_delete(cmd, argv)
  local o, pos = parse(cmd, argv, { queue = 'string' }, CRON_USAGE)
  if not o then return pos end
  local name = pos[2]
  if not name then return missing(cmd, 'NAME', 'NAME') end
  if pos[3] then return too_many(cmd, pos[3]) end
  local rc = o.queue and bad_name(cmd, o.queue)
  if rc then return rc end
  return with_client(cmd, o, function(q)
    if not q:deleteCron(name, o.queue) then
      errline(cmd, str_format("no cron entry '%s' (jobrt cron list shows them)", name))
      return 1
    end
    io.stdout:write(str_format("deleted cron entry '%s'\n", name))
    return 0
  end)
end

local function cmd_cron(argv, cmd)
  local sub = argv[1]
  if sub == 'add' then return cron_add('cron add', argv) end
  if sub == 'list' then return cron_list('cron list', argv) end
  if sub == 'delete' then return cron_delete('cron delete', argv) end
  local o, st = parse(cmd, argv, {}, CRON_USAGE)
  if not o then return st end
  if sub == nil then
    errline(cmd, 'missing what to do: use  jobrt cron add|list|delete  (see jobrt cron --help)')
  else
    errline(cmd, str_format("unknown action '%s': use add, list or delete (see jobrt cron --help)", sub))
  end
  return 2
end

-- ---- pause, resume ----------------------------------------------------------------

local PAUSE_USAGE = [[
usage: jobrt pause QUEUE
       jobrt resume QUEUE

pause: workers finish the jobs they hold and start nothing more from QUEUE, across all of them;
enqueueing goes on. The state is kept in Redis (it survives worker restarts); jobrt stats and
jobrt queues show it. resume: workers start its jobs again at once.
]]

local function cmd_pause(argv, cmd)
  local o, pos = parse(cmd, argv, {}, PAUSE_USAGE)
  if not o then return pos end
  local queue = pos[1]
  if not queue then return missing(cmd, 'QUEUE', 'QUEUE') end
  if pos[2] then return too_many(cmd, pos[2]) end
  local rc = bad_name(cmd, queue)
  if rc then return rc end
  return with_client(cmd, o, function(q)
    local changed = q[cmd](q, queue)
    if cmd == 'pause' then
      io.stdout:write(str_format(changed and "paused queue '%s'\n" or "queue '%s' was already paused\n", queue))
    else
      io.stdout:write(str_format(changed and "resumed queue '%s'\n" or "queue '%s' was not paused\n", queue))
    end
    return 0
  end)
end

-- ---- limit ---------------------------------------------------------------------------

local LIMIT_USAGE = [[
usage: jobrt limit QUEUE [--rate N --per SECONDS] [--max-active N] [--clear]

Limits that hold across all workers of QUEUE (kept in Redis); without options, shows them.
  --rate N --per S   at most N jobs start per S seconds: one every S/N seconds (GCRA without a
                     burst), so no window of S seconds sees more than N starts
  --max-active N     at most N jobs of QUEUE run at once
  --clear            remove the limits (with --rate or --max-active: remove only the others)
Idle workers wait for the limit on a timer (rate) or a wake-up (max-active); they do not poll.
A handler that meets an outside service's limit calls job:retry_later(seconds) instead.
]]

local function show_limits(queue, l)
  local parts = {}
  if l.rate then parts[#parts + 1] = str_format('at most %d job%s started per %g s', l.rate, l.rate == 1 and '' or 's', l.per) end
  if l.max_active then parts[#parts + 1] = str_format('at most %d running at once', l.max_active) end
  io.stdout:write(str_format("queue '%s': %s%s\n", queue, #parts > 0 and concat(parts, ', ') or 'no limits',
    l.paused and ' (paused)' or ''))
end

local function cmd_limit(argv, cmd)
  local o, pos = parse(cmd, argv, { rate = 'count', per = 'seconds', ['max-active'] = 'count', clear = 'flag', json = 'flag' },
    LIMIT_USAGE)
  if not o then return pos end
  local queue = pos[1]
  if not queue then return missing(cmd, 'QUEUE', 'QUEUE [--rate N --per SECONDS] [--max-active N] [--clear]') end
  if pos[2] then return too_many(cmd, pos[2]) end
  local brc = bad_name(cmd, queue)
  if brc then return brc end
  if (o.rate == nil) ~= (o.per == nil) then
    errline(cmd, '--rate and --per go together: --rate N --per SECONDS (at most N jobs start per SECONDS)')
    return 2
  end
  if o.per and (o.per < 0.001 or o.per > 86400) then
    errline(cmd, '--per wants seconds from 0.001 to 86400')
    return 2
  end
  if (o.rate and o.rate > 1000000) or (o['max-active'] and o['max-active'] > 1000000) then
    errline(cmd, '--rate and --max-active want a whole number from 1 to 1000000')
    return 2
  end
  local set
  if o.rate or o['max-active'] or o.clear then
    set = { rate = o.rate, per = o.per, max_active = o['max-active'] }
    if o.clear then
      if o.rate and o['max-active'] then
        errline(cmd, '--clear with both --rate and --max-active leaves nothing to clear')
        return 2
      end
      set.clear = o.rate and 'max_active' or o['max-active'] and 'rate' or true
    end
  end
  return with_client(cmd, o, function(q)
    local l = q:limit(queue, set)
    if o.json then
      io.stdout:write(to_json(l, '  '), '\n')
    else
      show_limits(queue, l)
    end
    return 0
  end)
end

-- ---- queues ------------------------------------------------------------------------

local QUEUES_USAGE = [[
usage: jobrt queues [--json]

Every queue of RESERVED:QCONFIG with its type, counts per state (as jobrt stats), whether it is
paused, its limits (RATE: N/S seconds; ACTIVE: at most running at once) and cron entries.
]]

local function cmd_queues(argv, cmd)
  local o, pos = parse(cmd, argv, { json = 'flag' }, QUEUES_USAGE)
  if not o then return pos end
  if pos[1] then return too_many(cmd, pos[1]) end
  return with_client(cmd, o, function(q)
    local list = q:queues()
    if listed(o, list, 'no queues in RESERVED:QCONFIG: create one with  jobrt queue-type QUEUE QUEUE|LBQUEUE|DELQUEUE') then
      return 0
    end
    local rows, notes = {}, {}
    for _, t in ipairs(list) do
      local function n(k) return t.error and '-' or tostring(t[k] or 0) end
      rows[#rows + 1] = { t.name, tostring(t.type or '?'), n('pending'), n('delayed'), n('parked'), n('executing'),
        n('failed'), n('completed'), t.paused == 1 and 'yes' or (t.error and '-' or 'no'),
        (t.rate_max or 0) > 0 and str_format('%d/%gs', t.rate_max, t.rate_per) or '-',
        (t.max_active or 0) > 0 and tostring(t.max_active) or '-', n('crons') }
      if t.error then notes[#notes + 1] = bare(t.error) end
    end
    io.stdout:write(table_text({ 'QUEUE', 'TYPE', 'PENDING', 'DELAYED', 'PARKED', 'EXECUTING', 'FAILED', 'COMPLETED',
      'PAUSED', 'RATE', 'ACTIVE', 'CRONS' }, rows, { false, false, true, true, true, true, true, true, false, true, true, true }))
    for _, m in ipairs(notes) do io.stdout:write('note: ', m, '\n') end
    return 0
  end)
end

-- ---- drain, obliterate ---------------------------------------------------------------

local DRAIN_USAGE = [[
usage: jobrt drain QUEUE

Removes every waiting and delayed job of QUEUE (waiting, due later, retries in backoff, parked
LBQUEUE jobs) and prints how many. Running jobs, the failed set, finished records, counters,
pause, limits and cron entries stay.
]]

local function cmd_drain(argv, cmd)
  local o, pos = parse(cmd, argv, {}, DRAIN_USAGE)
  if not o then return pos end
  local queue = pos[1]
  if not queue then return missing(cmd, 'QUEUE', 'QUEUE') end
  if pos[2] then return too_many(cmd, pos[2]) end
  local rc = bad_name(cmd, queue)
  if rc then return rc end
  return with_client(cmd, o, function(q)
    local n = q:drain(queue)
    io.stdout:write(str_format("drained queue '%s': removed %d waiting or delayed job%s\n", queue, n, n == 1 and '' or 's'))
    return 0
  end)
end

local OBLITERATE_USAGE = [[
usage: jobrt obliterate QUEUE [--force]

Deletes QUEUE altogether: every key jobrt:{QUEUE}:* (jobs in every state, records, counters,
limits, cron entries, metrics) and its type in RESERVED:QCONFIG. Refused while a live worker
serves QUEUE (jobrt stats lists them): stop those first, or pass --force (they then fail to
reserve from it until they stop).
]]

local function cmd_obliterate(argv, cmd)
  local o, pos = parse(cmd, argv, { force = 'flag' }, OBLITERATE_USAGE)
  if not o then return pos end
  local queue = pos[1]
  if not queue then return missing(cmd, 'QUEUE', 'QUEUE [--force]') end
  if pos[2] then return too_many(cmd, pos[2]) end
  local rc = bad_name(cmd, queue)
  if rc then return rc end
  return with_client(cmd, o, function(q)
    local res = q:obliterate(queue, { force = o.force or nil })
    io.stdout:write(str_format("obliterated queue '%s'%s: deleted %d key%s\n", queue,
      res.type and (' (' .. res.type .. ')') or '', res.keys, res.keys == 1 and '' or 's'))
    return 0
  end)
end

local COMMANDS = {
  cron = cmd_cron, pause = cmd_pause, resume = cmd_pause, limit = cmd_limit, queues = cmd_queues,
  drain = cmd_drain, obliterate = cmd_obliterate,
}

function _M.main(argv, cmd)
  local f = COMMANDS[cmd]
  if not f then
    errline(tostring(cmd), 'not a command of jobrt.sched_commands (see jobrt --help)')
    return 2
  end
  return f(argv or {}, cmd)
end

return _M
