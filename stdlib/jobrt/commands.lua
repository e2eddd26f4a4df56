-- jobrt.commands: the shell commands that enqueue and inspect (DESIGN "Command line"):
--   jobrt enqueue QUEUE JOB [JSON-ARGS] | QUEUE JOB - | QUEUE - | --flow FILE (jobrt.flow_commands)
--   jobrt queue-type QUEUE [TYPE]
--   jobrt stats [QUEUE]      jobrt failed QUEUE [list|retry|delete]
--   jobrt job QUEUE ID       jobrt delete QUEUE ID
-- main(argv, cmd) returns the exit status: 0 done, 1 failed (Redis, a missing queue type, a job
-- that failed under --wait, nothing found), 2 usage error (options that do not fit the queue's
-- type included). Every problem is one line on stderr that names it and the fix.
local jobrt = require 'jobrt'
local naming = require 'jobrt.names'
local args = require 'jobrt.args'
local client = require 'jobrt.client'
local ops = require 'jobrt.ops'
local redis = require 'jobrt.redis'
local term = require 'jobrt.core.term'
local json = require 'jobrt.json'

local io, os, type, pairs, ipairs, tostring, tonumber, pcall = io, os, type, pairs, ipairs, tostring, tonumber, pcall
local str_format, concat, sort, rep, floor = string.format, table.concat, table.sort, string.rep, math.floor

local NULL = json.null

local _M = {}

local COMMON_HELP = [[
Common options:
  --redis URL        redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix:///PATH,
                     redis+sentinel://HOST:PORT[,...]/MASTERNAME or
                     redis+cluster://HOST:PORT[,...] (env JOBRT_REDIS; see the
                     README's "Addresses"); default: ./.jobrt/redis.sock (this directory's
                     private Redis) if it exists, else redis://127.0.0.1:6379
]] .. redis.CLI_HELP .. [[
  --log-level LEVEL  debug, info, warn or error
  --log-format F     text or json (env JOBRT_LOG_FORMAT)
  -h, --help         this text
]]

-- ---- output helpers ---------------------------------------------------------

local function errline(cmd, msg)
  io.stderr:write('jobrt ', cmd, ': ', msg, '\n')
  io.stderr:flush()
end

-- v with every string made valid UTF-8 (bad bytes as U+FFFD), arrays still marked as arrays
local function sanitized(v)
  if type(v) == 'string' then return json.sanitize(v) end
  if type(v) ~= 'table' then return v end
  local out = {}
  for k, x in pairs(v) do out[sanitized(k)] = sanitized(x) end
  if json.is_array(v) then json.array(out) end
  return out
end

-- v as JSON with sorted keys: stable output for people and for diff; indented when indent is
-- given (every --json output), on one line otherwise. Text that is not UTF-8 (a record written
-- by another tool) is shown with U+FFFD for the bad bytes, not refused.
local function to_json(v, indent)
  local opts = { sort = true, indent = indent }
  local text, err, code = json.encode(v, opts)
  if not text and code == 'EUTF8' then text, err = json.encode(sanitized(v), opts) end
  return text or error(err, 0)
end

local record_values = client.record_values

-- Text table: rows of strings; numeric columns right-aligned.
local function table_text(header, rows, right)
  local w = {}
  for i, h in ipairs(header) do w[i] = #h end
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do if #c > w[i] then w[i] = #c end end
  end
  local out = {}
  local function line(r)
    local cells = {}
    for i, c in ipairs(r) do
      local padn = w[i] - #c
      if right[i] then cells[i] = rep(' ', padn) .. c
      elseif i < #r then cells[i] = c .. rep(' ', padn)
      else cells[i] = c end
    end
    out[#out + 1] = concat(cells, '  ')
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
  return concat(out, '\n') .. '\n'
end

-- ---- common parts -------------------------------------------------------------

local COMMON = { redis = 'string', ['log-level'] = 'string', ['log-format'] = 'string' }
for k, v in pairs(redis.CLI_OPTIONS) do COMMON[k] = v end

-- Parses argv for cmd with the command's own spec plus the common options.
-- Returns opts, pos, or nil, status after printing what to print.
local function parse(cmd, argv, spec, usage)
  local full = {}
  for k, v in pairs(COMMON) do full[k] = v end
  for k, v in pairs(spec) do full[k] = v end
  local opts, pos = args.parse(argv, full, 'jobrt ' .. cmd)
  if not opts then
    io.stderr:write(pos, '\n')
    return nil, 2
  end
  if opts.help then
    io.stdout:write(usage, '\n', COMMON_HELP)
    return nil, 0
  end
  local ok, err = args.apply_logging(opts, 'jobrt ' .. cmd)
  if not ok then
    io.stderr:write(err, '\n')
    return nil, 2
  end
  return opts, pos
end

-- Returns the client, or nil and the exit status (2: a malformed URL, 1: Redis not reachable).
-- max_payload: the client's limit on args (enqueue's --max-payload).
local function connect(cmd, opts, max_payload)
  local url, perr = redis.address(opts.redis)
  if url == false then
    errline(cmd, perr)
    return nil, 2
  end
  local tok, terr = redis.use_cli_tls(opts, url)
  if not tok then
    errline(cmd, terr)
    return nil, 2
  end
  local q, err, refused = client.open(url, max_payload)
  if not q then
    errline(cmd, err .. (refused and ': start redis-server there, or pass --redis URL (or set JOBRT_REDIS)' or ''))
    return nil, 1
  end
  return q
end

-- A QUEUE (and ID) argument outside the documented alphabet (jobrt.names) is a usage error:
-- prints it and returns 2; returns nil when the names are fine.
local function bad_name(cmd, queue, id)
  local err = queue and naming.queue(queue)
  if err then
    errline(cmd, 'the queue name ' .. err)
    return 2
  end
  err = id and naming.ref(id)
  if err then
    errline(cmd, 'the job id ' .. err)
    return 2
  end
end

local function missing(cmd, what, synopsis)
  errline(cmd, str_format('missing %s: usage: jobrt %s %s (see jobrt %s --help)', what, cmd, synopsis, cmd))
  return 2
end

local function too_many(cmd, arg, hint)
  errline(cmd, str_format("unexpected argument '%s'%s (see jobrt %s --help)", arg, hint or '', cmd))
  return 2
end

-- "enqueueJob: queue 'x' has no type..." -> "queue 'x' has no type..."
local function bare(msg)
  return (tostring(msg):gsub('^[%w_%.]+: ', '', 1))
end

-- ---- enqueue --------------------------------------------------------------------

local ENQUEUE_USAGE = [[
usage: jobrt enqueue QUEUE JOB [JSON-ARGS] [OPTIONS]
       jobrt enqueue --flow FILE.json [--wait] a flow: a parent job that runs after its children
       jobrt enqueue QUEUE JOB [JSON-ARGS] [OPTIONS] --flow FILE.json    the same, its root here
       jobrt enqueue QUEUE JOB - [OPTIONS]     one job per line of stdin, each line its JSON-ARGS
       jobrt enqueue QUEUE - [OPTIONS]         one job per line of stdin, each line a JSON object
                                               {"job": NAME, "args": ..., "jobHash": ..., "priority": ...,
                                                "timestamp": ..., "delay": ..., "id": ..., "retries": ...,
                                                "timeout": ...} (options as in the Lua API)

Enqueues one job and prints its id. An LBQUEUE job identical to a waiting one (same jobHash)
is merged with it: its id is printed, and stderr says so. JSON-ARGS (default {}) are the job's arguments: quote them
in single quotes, e.g. jobrt enqueue emails send '{"to":"ann@example.com"}'. They must be
UTF-8 JSON text (RFC 8259) of at most --max-payload bytes, and are stored as given.
With -, reads JSON lines from stdin (blank lines skipped), checks them all before enqueueing
any, sends them pipelined, shows progress on a terminal and prints the count at the end.
The queue needs a type: jobrt queue-type QUEUE QUEUE|LBQUEUE|DELQUEUE.

Options:
  --hash H           the jobHash (required by LBQUEUE; identity for DELQUEUE; ignored by QUEUE)
  --priority P       highest first: LBQUEUE (default: the number of identical jobs) and QUEUE
                     (default 0; first in, first out among equal priorities); not DELQUEUE
  --at UNIX-SECONDS  run at this time (fractions allowed; QUEUE and DELQUEUE)
  --in SECONDS       run after this delay (QUEUE and DELQUEUE)
  --id ID            client id (not all digits); an id already waiting or running is not enqueued twice
  --max-payload BYTES  the largest JSON-ARGS accepted (default 16777216, 16 MiB; at most 512 MiB)
  --retries N        extra attempts after a failure (0-1000)
  --timeout S        seconds the handler may run before the job fails
  --wait             wait for the job and print its result as JSON (the job's id goes to
                     stderr first); exit 1 if it failed. On a terminal, its job:progress
                     reports show on stderr as they come
  --wait-timeout S   with --wait: give up after S seconds (exit 1; the job stays queued)
  --flow FILE.json   enqueue a flow (- reads stdin): FILE is the root job, a JSON object
                     {"queue":"book","job":"assemble","args":{...},"opts":{"id":...},
                      "children":[{"queue":"pages","job":"render","args":{...}}, ...]}
                     (children nest; "ignoreFailure":true on a child lets its parent run when
                     it fails); with QUEUE JOB [JSON-ARGS] the root comes from the command line
                     and FILE is the array of its children. The root runs once all its
                     children have finished and reads their results in job.children; prints
                     the root's id (--wait: its result)

Exit status: 0 enqueued (or, with --wait, succeeded), 1 failed, 2 usage error.
]]

local ENQUEUE_SPEC = { hash = 'string', priority = 'number', at = 'number', ['in'] = 'seconds',
                       id = 'string', retries = 'number', timeout = 'number', wait = 'flag',
                       ['wait-timeout'] = 'seconds', ['max-payload'] = 'count', flow = 'string' }

-- Lua option name -> command-line option
local FLAG_OF = { jobHash = '--hash', priority = '--priority', timestamp = '--at', delay = '--in',
                  id = '--id', retries = '--retries', timeout = '--timeout' }

-- a client message about an option, in command-line words
local function cli_words(msg)
  msg = msg:gsub("options? '(%w+)' and '(%w+)'", function(a, b)
    return (FLAG_OF[a] or a) .. ' and ' .. (FLAG_OF[b] or b)
  end)
  msg = msg:gsub("option '(%w+)'", function(k) return FLAG_OF[k] or k end)
  msg = msg:gsub("give the option jobHash", "give --hash")
  return msg
end

local function cli_opts(o)
  local t = {}
  if o.hash then t.jobHash = o.hash end
  if o.priority then t.priority = o.priority end
  if o.at then t.timestamp = o.at end
  if o['in'] then t.delay = o['in'] end
  if o.id then t.id = o.id end
  if o.retries then t.retries = o.retries end
  if o.timeout then t.timeout = o.timeout end
  return t
end

local QUOTE_HINT = [[: quote it in single quotes, e.g. '{"user":42}']]

-- "JSON-ARGS is not valid JSON (...)" for a json.check failure (err says "JSON text is ...")
local function json_problem(what, err, code)
  err = tostring(err):gsub('^JSON text ', '', 1)
  if code == 'ETOOBIG' then
    return what .. ' ' .. err .. ' (--max-payload BYTES sets the limit)'
  end
  return what .. ' ' .. err
end

-- Reads stdin line by line. Returns { {n=line number, text=}... } without blank lines.
local function read_lines()
  local lines, n = {}, 0
  while true do
    local l = term.read_line()
    if l == nil then break end
    n = n + 1
    l = l:gsub('\r$', '')
    if l:find('%S') then lines[#lines + 1] = { n = n, text = l } end
  end
  return lines
end

-- Enqueues items { {job=, text=, opts=, n=}... } with up to `window` calls in flight (the
-- connection pipelines them); progress on stderr when it is a terminal and there are many.
-- Returns made, existed, or nil, message of the first failure.
local function enqueue_bulk(q, queue, items)
  local total = #items
  local done, made, existed, first_err = 0, 0, 0, nil
  local show = total >= 1000 and term.isatty(2)
  local t0 = jobrt.monotime()
  local last = 0
  local function progress(final)
    if not show then return end
    local now = jobrt.monotime()
    if not final and now - last < 0.2 then return end
    last = now
    io.stderr:write(str_format('\rjobrt enqueue: %d/%d (%d%%) %.0f jobs/s ', done, total,
      floor(done * 100 / total), done / math.max(now - t0, 1e-6)))
    if final then io.stderr:write('\n') end
    io.stderr:flush()
  end
  local nexti = 1
  local wg = jobrt.waitgroup()
  local function worker()
    while nexti <= total and not first_err do
      local it = items[nexti]
      nexti = nexti + 1
      local ok, id, ex = pcall(client.enqueue_one, q, 'enqueue', queue, it.job, it.text, it.opts)
      if not ok then
        first_err = first_err or str_format('line %d: %s', it.n, bare(id))
      else
        done = done + 1
        if ex then existed = existed + 1 else made = made + 1 end
        progress(false)
      end
    end
  end
  for _ = 1, math.min(500, total) do wg:spawn(worker) end
  wg:wait()
  progress(true)
  if first_err then return nil, first_err, done end
  return made, existed
end

-- Options that do not fit the queue's type are a usage error (2), found before anything is
-- sent; a queue without a type (or Redis failing) is 1. Returns nil, the queue's type when all fit.
local function check_type(q, cmd, queue, list)
  local qtype, err = q.ops:queue_type(queue)
  if not qtype then
    errline(cmd, tostring(err))
    return 1
  end
  for _, it in ipairs(list) do
    local msg = client.type_rules('enqueue', queue, qtype, it.opts)
    if msg then
      errline(cmd, it.n and str_format('line %d of stdin: %s', it.n, bare(msg)) or cli_words(bare(msg)))
      return 2
    end
  end
  return nil, qtype
end

-- What to say when the job was there already: for an LBQUEUE that is the queue doing its job
-- (identical jobs are one entry), for an id given with --id it is the id keeping its promise.
local function existed_line(qtype, queue, id, opts)
  if qtype == 'LBQUEUE' then
    return str_format("merged with job %s, which waits with the same jobHash '%s' in queue '%s' (identical LBQUEUE jobs run once)",
      id, tostring(opts.jobHash), queue)
  end
  return str_format("job %s is already waiting or running in queue '%s'; it was not enqueued twice", id, queue)
end

local function enqueue_stdin(q, cmd, queue, job, base, limit)
  local lines = read_lines()
  local items = {}
  for i, l in ipairs(lines) do
    -- a line of objects holds options beside its args: some room for them
    local v, jerr, jcode = json.decode(l.text, { max_bytes = job and limit or limit + 65536 })
    if v == nil and jcode == 'ETOOBIG' and not job then
      errline(cmd, str_format('line %d of stdin is %d bytes; its args may be at most %d bytes (--max-payload BYTES sets the limit)',
        l.n, #l.text, limit))
      return 2
    elseif v == nil then
      errline(cmd, json_problem(str_format('line %d of stdin', l.n), jerr, jcode) ..
        (jcode == 'EJSON' and ': write one JSON value per line' or ''))
      return 2
    end
    if job then
      items[i] = { n = l.n, job = job, text = l.text, opts = base }
    else
      if type(v) ~= 'table' or type(v.job) ~= 'string' or v.job == '' then
        errline(cmd, str_format('line %d of stdin must be a JSON object with a "job" name, e.g. {"job":"send","args":{"to":"ann"}}', l.n))
        return 2
      end
      local okn, nerr = pcall(client.check_job, 'enqueue', v.job)
      if not okn then
        errline(cmd, str_format('line %d of stdin: %s', l.n, bare(nerr)))
        return 2
      end
      local o = {}
      for k, val in pairs(base) do o[k] = val end
      for k, val in pairs(v) do
        if k ~= 'job' and k ~= 'args' then o[k] = val end
      end
      local okc, clean = pcall(client.check_options, 'enqueue', o)
      if not okc then
        errline(cmd, str_format('line %d of stdin: %s', l.n, bare(clean)))
        return 2
      end
      -- the args exactly as written on the line: no re-encoding
      local text = v.args ~= nil and json.member(l.text, 'args') or '{}'
      if #text > limit then
        errline(cmd, str_format('line %d of stdin: args are %d bytes, more than the limit of %d bytes (--max-payload BYTES sets the limit)',
          l.n, #text, limit))
        return 2
      end
      items[i] = { n = l.n, job = v.job, text = text, opts = clean }
    end
  end
  local rc, qtype
  if #items > 0 then rc, qtype = check_type(q, cmd, queue, items) end
  if rc then return rc end
  local made, existed, done = enqueue_bulk(q, queue, items)
  if not made then
    errline(cmd, existed .. str_format(' (%d of %d jobs were enqueued before it)', done, #items))
    return 1
  end
  local note = ''
  if existed > 0 then
    note = qtype == 'LBQUEUE' and str_format(', %d merged with identical waiting jobs', existed)
      or str_format(' (%d already waiting or running, not enqueued twice)', existed)
  end
  io.stdout:write(str_format('enqueued %d job%s%s\n', made, made == 1 and '' or 's', note))
  return 0
end

local function cmd_enqueue(argv, cmd)
  local o, pos = parse(cmd, argv, ENQUEUE_SPEC, ENQUEUE_USAGE)
  if not o then return pos end
  if o.flow then
    if pos[1] and bad_name(cmd, pos[1]) then return 2 end
    if o['wait-timeout'] and not o.wait then
      errline(cmd, '--wait-timeout needs --wait')
      return 2
    end
    return require('jobrt.flow_commands').enqueue(o, pos, cmd, _M.util)
  end
  local synopsis = 'QUEUE JOB [JSON-ARGS] [OPTIONS]'
  local queue, job, text = pos[1], pos[2], pos[3]
  if not queue then return missing(cmd, 'QUEUE', synopsis) end
  if not job then return missing(cmd, 'JOB', synopsis) end
  if bad_name(cmd, queue) then return 2 end
  local from_stdin = job == '-' and 'objects' or (text == '-' and 'args') or nil
  if job == '-' and text then return too_many(cmd, text, ' after -') end
  if pos[4] then return too_many(cmd, pos[4], ': quote JSON-ARGS in single quotes so the shell keeps it one word') end
  if o.at and o['in'] then
    errline(cmd, '--at and --in exclude each other: give one of them')
    return 2
  end
  if o['wait-timeout'] and not o.wait then
    errline(cmd, '--wait-timeout needs --wait')
    return 2
  end
  if from_stdin and o.wait then
    errline(cmd, '--wait works with one job: enqueue from stdin without it, or one job at a time')
    return 2
  end
  if from_stdin and o.id then
    errline(cmd, '--id names one job: put an "id" in each line of stdin instead (jobrt enqueue QUEUE -)')
    return 2
  end
  if job ~= '-' then
    local okn, nerr = pcall(client.check_job, 'enqueue', job)
    if not okn then
      errline(cmd, bare(nerr))
      return 2
    end
  end
  local okc, copts = pcall(client.check_options, 'enqueue', cli_opts(o))
  if not okc then
    errline(cmd, cli_words(bare(copts)))
    return 2
  end
  local limit = o['max-payload'] or json.MAX_PAYLOAD
  local okl, lerr = json.check_limit(limit, '--max-payload')
  if not okl then
    errline(cmd, lerr)
    return 2
  end
  if not from_stdin then
    if text == nil then text = '{}' end
    local okj, jerr, jcode = json.check(text, { max_bytes = limit })
    if not okj then
      errline(cmd, json_problem('JSON-ARGS', jerr, jcode) .. (jcode == 'EJSON' and QUOTE_HINT or ''))
      return 2
    end
  end
  local q, qcode = connect(cmd, o, limit)
  if not q then return qcode end
  if from_stdin then
    local rc = enqueue_stdin(q, cmd, queue, from_stdin == 'args' and job or nil, copts, limit)
    q:close()
    return rc
  end
  local rc, qtype = check_type(q, cmd, queue, { { opts = copts } })
  if rc then
    q:close()
    return rc
  end
  if not o.wait then
    local ok, id, existed = pcall(client.enqueue_one, q, 'enqueue', queue, job, text, copts)
    q:close()
    if not ok then
      errline(cmd, cli_words(bare(id)))
      return 1
    end
    io.stdout:write(tostring(id), '\n')
    if existed then errline(cmd, existed_line(qtype, queue, id, copts)) end
    return 0
  end
  -- --wait: the result goes to stdout; the id to stderr at once, so a long wait can be
  -- interrupted and the job looked up later (jobrt job QUEUE ID)
  local function on_enqueued(jid, existed)
    errline(cmd, existed and (existed_line(qtype, queue, jid, copts) .. '; waiting for its result')
      or str_format("job %s enqueued in queue '%s'; waiting for its result", jid, queue))
  end
  -- on a terminal, show the job's progress reports as they come (job:progress)
  local shown_progress = false
  local on_progress = term.isatty(2) and function(v, pid)
    shown_progress = true
    local txt = type(v) == 'number' and str_format('%g%%', v) or to_json(v)
    if #txt > 200 then txt = txt:sub(1, 197) .. '...' end
    io.stderr:write('\r\27[K', str_format('jobrt enqueue: job %s: %s', pid, txt))
    io.stderr:flush()
  end or nil
  local ok, id, rec = pcall(client.enqueue_and_wait, q, 'enqueue', queue, job, text, copts, o['wait-timeout'],
    on_enqueued, on_progress)
  if shown_progress then io.stderr:write('\n') end
  q:close()
  if not ok then
    errline(cmd, cli_words(bare(id)))
    return 1
  end
  if rec == false then
    errline(cmd, str_format("job %s in queue '%s' was deleted before it finished", id, queue))
    return 1
  end
  if rec.result == 'successful' then
    local v = rec['result-value']
    if v == nil or v == NULL or v == '' then v = 'null' end
    io.stdout:write(v, '\n')
    return 0
  end
  local _, msg = client.outcome(queue, id, rec)
  errline(cmd, msg)
  return 1
end

-- ---- queue-type -----------------------------------------------------------------

local QTYPE_USAGE = [[
usage: jobrt queue-type QUEUE [QUEUE|LBQUEUE|DELQUEUE] [--force]

Prints the type of QUEUE from the Redis hash RESERVED:QCONFIG, or sets it and prints it.
  QUEUE     FIFO; a jobHash is ignored
  LBQUEUE   jobs need a jobHash; identical ones are one entry; highest priority first;
            one job per jobHash at a time
  DELQUEUE  each job runs at its timestamp (--at) or after its delay (--in)
Changing the type of a queue that holds jobs would strand them: it is refused unless --force.
]]

local function cmd_queue_type(argv, cmd)
  local o, pos = parse(cmd, argv, { force = 'flag' }, QTYPE_USAGE)
  if not o then return pos end
  local queue, qtype = pos[1], pos[2]
  if not queue then return missing(cmd, 'QUEUE', 'QUEUE [QUEUE|LBQUEUE|DELQUEUE]') end
  if pos[3] then return too_many(cmd, pos[3]) end
  if bad_name(cmd, queue) then return 2 end
  if qtype then
    local up = qtype:upper()
    if not ops.TYPES[up] then
      errline(cmd, str_format("unknown queue type '%s': use QUEUE, LBQUEUE or DELQUEUE", qtype))
      return 2
    end
    qtype = up
  end
  local q, qcode = connect(cmd, o)
  if not q then return qcode end
  local ok, cur = pcall(q.queueType, q, queue)
  if not ok then
    q:close()
    errline(cmd, bare(cur))
    return 1
  end
  if not qtype then
    q:close()
    if cur == nil then
      errline(cmd, str_format("queue '%s' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
        queue, queue))
      return 1
    end
    if not ops.TYPES[cur] then
      errline(cmd, str_format("queue '%s' has unknown type '%s' in RESERVED:QCONFIG: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
        queue, cur, queue))
      return 1
    end
    io.stdout:write(cur, '\n')
    return 0
  end
  if cur and cur ~= qtype and ops.TYPES[cur] and not o.force then
    local oks, s = pcall(q.stats, q, queue)
    if oks then
      local n = (s.pending or 0) + (s.delayed or 0) + (s.parked or 0) + (s.executing or 0)
      if n > 0 then
        q:close()
        errline(cmd, str_format("queue '%s' is a %s holding %d job%s; changing its type would strand them: let them finish first, or pass --force",
          queue, cur, n, n == 1 and '' or 's'))
        return 1
      end
    end
  end
  local okset, err = pcall(q.queueType, q, queue, qtype)
  q:close()
  if not okset then
    errline(cmd, bare(err))
    return 1
  end
  io.stdout:write(qtype, '\n')
  return 0
end

-- ---- stats ----------------------------------------------------------------------

local STATS_USAGE = [[
usage: jobrt stats [QUEUE] [--json]

Counts of jobs per state for QUEUE, or for every queue in RESERVED:QCONFIG, and the workers
alive (those whose registry entry jobrt:{workers}:<id> has not expired).
  pending    ready to run now          delayed    due later (incl. retries in backoff)
  parked     LBQUEUE jobs behind a running one of the same jobHash
  executing  reserved by a worker      failed     in the failed set (jobrt failed QUEUE)
  completed  succeeded since the queue was created
Options:
  --json             print {"queues": {QUEUE: counts}, "workers": [...]} instead of tables
]]

local STAT_COLS = { 'pending', 'delayed', 'parked', 'executing', 'failed', 'completed' }

local function cmd_stats(argv, cmd)
  local o, pos = parse(cmd, argv, { json = 'flag' }, STATS_USAGE)
  if not o then return pos end
  local queue = pos[1]
  if pos[2] then return too_many(cmd, pos[2]) end
  if bad_name(cmd, queue) then return 2 end
  local q, qcode = connect(cmd, o)
  if not q then return qcode end
  local ok, s = pcall(q.stats, q, queue)
  if not ok then
    q:close()
    errline(cmd, bare(s))
    return 1
  end
  local okw, workers = pcall(q.workers, q)
  q:close()
  if not okw then
    errline(cmd, bare(workers))
    return 1
  end
  local queues = queue and { [queue] = s } or s
  if o.json then
    io.stdout:write(to_json({ queues = queues, workers = json.array(workers) }, '  '), '\n')
    return 0
  end
  local names = {}
  for name in pairs(queues) do names[#names + 1] = name end
  sort(names)
  if #names == 0 then
    io.stdout:write('no queues in RESERVED:QCONFIG: create one with  jobrt queue-type QUEUE QUEUE|LBQUEUE|DELQUEUE\n')
  else
    local rows, header, right = {}, { 'QUEUE', 'TYPE' }, { false, false }
    for _, c in ipairs(STAT_COLS) do
      header[#header + 1] = c:upper()
      right[#right + 1] = true
    end
    local notes = {}
    for _, name in ipairs(names) do
      local t = queues[name]
      local row = { name, tostring(t.type or '?') }
      for _, c in ipairs(STAT_COLS) do row[#row + 1] = t.error and '-' or tostring(t[c] or 0) end
      rows[#rows + 1] = row
      if t.error then notes[#notes + 1] = bare(t.error) end
    end
    io.stdout:write(table_text(header, rows, right))
    for _, n in ipairs(notes) do io.stdout:write('note: ', n, '\n') end
    local paused = {}
    for _, name in ipairs(names) do if queues[name].paused == 1 then paused[#paused + 1] = name end end
    if #paused > 0 then
      io.stdout:write('paused: ', concat(paused, ', '), ' (workers start nothing from them; jobrt resume QUEUE)\n')
    end
    local waiting = {}
    for _, name in ipairs(names) do
      local n = tonumber(queues[name].waiting_children) or 0
      if n > 0 then waiting[#waiting + 1] = str_format('%s %d', name, n) end
    end
    if #waiting > 0 then
      io.stdout:write('parents waiting for their children (flows): ', concat(waiting, ', '), '\n')
    end
  end
  io.stdout:write(str_format('workers alive: %d\n', #workers))
  if #workers > 0 then
    local rows = {}
    local now = jobrt.now()
    for _, w in ipairs(workers) do
      local hb = tonumber(w.heartbeat)
      if hb and hb > 1e11 then hb = hb / 1000 end
      rows[#rows + 1] = { tostring(w.id), tostring(w.host or '?'), tostring(w.pid or '?'),
        tostring(w.queues or ''), tostring(w.done or 0), tostring(w.failed or 0),
        hb and str_format('%.0fs ago', math.max(0, now - hb)) or '?' }
    end
    local t = table_text({ 'ID', 'HOST', 'PID', 'QUEUES', 'DONE', 'FAILED', 'HEARTBEAT' }, rows,
      { false, false, true, false, true, true, true })
    io.stdout:write((t:gsub('[^\n]+', '  %0')))
  end
  return 0
end

-- ---- failed ---------------------------------------------------------------------

local FAILED_USAGE = [[
usage: jobrt failed QUEUE [list|retry [ID]|delete] [--limit N] [--json]

The failed set of QUEUE: jobs that failed for good (after their retries).
  list     (the default) newest first: id, job, when it failed, the error
  retry    put every failed job back in the queue (with ID: only that job)
  delete   delete every failed job
Options:
  --limit N          list at most N jobs (default 50)
  --json             list the records as a JSON array (args and result-value as JSON values)
]]

local function first_line(s)
  s = tostring(s or '')
  return (s:match('^[^\n]*'))
end

local function when(ts)
  local n = tonumber(ts)
  if not n then return '-' end
  return os.date('!%Y-%m-%d %H:%M:%S', floor(n)) .. 'Z'
end

local function cmd_failed(argv, cmd)
  local o, pos = parse(cmd, argv, { limit = 'count', json = 'flag' }, FAILED_USAGE)
  if not o then return pos end
  local queue, action, one = pos[1], pos[2] or 'list', pos[3]
  if not queue then return missing(cmd, 'QUEUE', 'QUEUE [list|retry|delete]') end
  if pos[4] or (one and action ~= 'retry') then return too_many(cmd, pos[4] or one) end
  if bad_name(cmd, queue, one) then return 2 end
  if action ~= 'list' and action ~= 'retry' and action ~= 'delete' then
    errline(cmd, str_format("unknown action '%s': use list, retry or delete", action))
    return 2
  end
  local q, qcode = connect(cmd, o)
  if not q then return qcode end
  local ok, a, b
  if action == 'list' then ok, a, b = pcall(q.listFailedJobs, q, queue, 0, o.limit or 50)
  elseif action == 'retry' and one then ok, a = pcall(q.retryFailedJob, q, queue, one)
  elseif action == 'retry' then ok, a = pcall(q.retryFailedJobs, q, queue)
  else ok, a = pcall(q.deleteFailedJobs, q, queue) end
  q:close()
  if not ok then
    errline(cmd, bare(a))
    return 1
  end
  if action == 'retry' and one then
    if not a then
      errline(cmd, str_format("job %s is not in the failed set of queue '%s' (see jobrt failed %s list)", one, queue, queue))
      return 1
    end
    io.stdout:write(str_format("retried failed job %s of queue '%s'\n", one, queue))
  elseif action == 'retry' then
    io.stdout:write(str_format("retried %d failed job%s of queue '%s'\n", a, a == 1 and '' or 's', queue))
  elseif action == 'delete' then
    io.stdout:write(str_format("deleted %d failed job%s of queue '%s'\n", a, a == 1 and '' or 's', queue))
  elseif o.json then
    for _, rec in ipairs(a) do record_values(rec) end
    io.stdout:write(to_json(json.array(a), '  '), '\n')
  else
    io.stdout:write(str_format("%d failed job%s in queue '%s'%s\n", b, b == 1 and '' or 's', queue,
      b > #a and str_format(' (newest %d shown; --limit N for more)', #a) or ''))
    if #a > 0 then
      local rows = {}
      for _, r in ipairs(a) do
        rows[#rows + 1] = { tostring(r.id), tostring(r['function']), when(r['finished-created']),
                            tostring(r.attempts or '-'), first_line(r['error-reason']) }
      end
      io.stdout:write(table_text({ 'ID', 'JOB', 'FAILED AT', 'ATTEMPTS', 'ERROR' }, rows,
        { false, false, false, true, false }))
    end
  end
  return 0
end

-- ---- job and delete -------------------------------------------------------------

local JOB_USAGE = [[
usage: jobrt job QUEUE ID

Prints the record of job ID of QUEUE as JSON (sorted keys): function, args and result-value
(as the JSON values they hold), state, result, error-reason, error-exception, timestamps,
attempts, worker...
Finished records expire (successful after 1 hour, failed after 7 days).
A job of a flow (jobrt enqueue --flow) also shows "parent-job" (a child: its parent's queue,
id and state) and "child-jobs" (a parent: each child's queue, id, job and state: pending,
executing, successful, failed or deleted, with its result or error once finished).
]]

local DELETE_USAGE = [[
usage: jobrt delete QUEUE ID

Deletes (cancels) job ID of QUEUE, whatever its state: a waiting job never runs; a running
one is stopped by its worker at once (and an LBQUEUE jobHash stays held until it has stopped).
]]

-- The shared start of `job` and `delete`: QUEUE ID and a connection. Returns the client, queue
-- and id, or nil and the exit status (the message is printed).
local function queue_id_command(cmd, argv, usage)
  local o, pos = parse(cmd, argv, {}, usage)
  if not o then return nil, pos end
  if not pos[1] then return nil, missing(cmd, 'QUEUE', 'QUEUE ID') end
  if not pos[2] then return nil, missing(cmd, 'ID', 'QUEUE ID') end
  if pos[3] then return nil, too_many(cmd, pos[3]) end
  if bad_name(cmd, pos[1], pos[2]) then return nil, 2 end
  local q, qcode = connect(cmd, o)
  if not q then return nil, qcode end
  return q, pos[1], pos[2]
end

local function cmd_job(argv, cmd)
  local q, queue, id = queue_id_command(cmd, argv, JOB_USAGE)
  if not q then return queue end
  local pos = { queue, id }
  local ok, flow = pcall(q.getFlow, q, queue, id)
  q:close()
  if not ok then
    errline(cmd, bare(flow))
    return 1
  end
  local rec = flow and flow.job
  if rec == nil then
    errline(cmd, str_format("no job '%s' in queue '%s' (finished jobs expire; failed ones are listed by  jobrt failed %s)",
      pos[2], pos[1], pos[1]))
    return 1
  end
  record_values(rec)
  -- a job of a flow: its parent and its children (jobrt.client_flows)
  if flow.parent then rec['parent-job'] = flow.parent end
  if flow.children then
    local kids = setmetatable({}, json.ARRAY)
    for i, c in ipairs(flow.children) do
      kids[i] = { queue = c.queue, id = c.id, job = c.job, state = c.state, result = c.result, error = c.error,
                  ignoreFailure = c.ignoreFailure or nil }
    end
    rec['child-jobs'] = kids
  end
  io.stdout:write(to_json(rec, '  '), '\n')
  return 0
end

local function cmd_delete(argv, cmd)
  local q, queue, id = queue_id_command(cmd, argv, DELETE_USAGE)
  if not q then return queue end
  local pos = { queue, id }
  local ok, deleted = pcall(q.deleteJob, q, queue, id)
  q:close()
  if not ok then
    errline(cmd, bare(deleted))
    return 1
  end
  if not deleted then
    errline(cmd, str_format("no job '%s' in queue '%s' (nothing deleted)", pos[2], pos[1]))
    return 1
  end
  io.stdout:write(str_format("deleted job %s of queue '%s'\n", pos[2], pos[1]))
  return 0
end

-- For the other command modules (jobrt.sched_commands): the shared parts.
_M.util = { parse = parse, connect = connect, errline = errline, missing = missing, too_many = too_many, bad_name = bad_name,
            bare = bare, table_text = table_text, to_json = to_json, ARRAY = json.ARRAY, when = when,
            json_problem = json_problem, QUOTE_HINT = QUOTE_HINT,
            cli_opts = cli_opts, cli_words = cli_words, flag_of = function(k) return FLAG_OF[k] or k end }

local COMMANDS = {
  enqueue = cmd_enqueue,
  ['queue-type'] = cmd_queue_type,
  stats = cmd_stats,
  failed = cmd_failed,
  job = cmd_job,
  delete = cmd_delete,
}

function _M.main(argv, cmd)
  local f = COMMANDS[cmd]
  if not f then
    errline(tostring(cmd), 'not a command of jobrt.commands (see jobrt --help)')
    return 2
  end
  return f(argv or {}, cmd)
end

return _M
