-- jobrt.repl: `jobrt repl`, an interactive Lua prompt with a connected queue client.
--
-- The prompt runs in a coroutine of the loop (term.readline yields), so callbacks, timers and
-- q:run results keep arriving while the user types; what they print appears above the prompt.
-- Each entry runs in its own coroutine: Ctrl-C interrupts one that waits too long.
-- On a terminal: line editing and history (~/.jobrt_history, or $JOBRT_HISTORY), prompts
-- "jobrt> " and ">> " (an incomplete chunk continues on the next line, as in the luajit prompt),
-- Ctrl-C clears the line, Ctrl-D exits. Piped stdin runs statement by statement without prompts;
-- the exit status is then 1 when a statement failed.
-- "=expr" and bare expressions print their values; tables through jobrt.pretty.
-- Tab completes globals, table fields, methods (queue:<Tab>) and queue names inside the first
-- string argument of a method call (queue:run("<Tab>): see _M.complete.
local jobrt = require 'jobrt'
local args = require 'jobrt.args'
local client = require 'jobrt.client'
local redis = require 'jobrt.redis'
local pretty = require 'jobrt.pretty'
local term = require 'jobrt.core.term'

local io, os, type, select, tostring, getmetatable, setmetatable, setfenv, loadstring, xpcall =
  io, os, type, select, tostring, getmetatable, setmetatable, setfenv, loadstring, xpcall
local concat, traceback, sort = table.concat, debug.traceback, table.sort
local next, pairs, ipairs, rawget = next, pairs, ipairs, rawget

local _M = {}

local USAGE = [[
usage: jobrt repl [--redis URL] [--log-level LEVEL] [--log-format FORMAT] [--tls-ca FILE ...]

An interactive Lua prompt on the jobrt loop. Preloaded: `queue` (also `q`), a client connected
to Redis (queue:enqueueJob, queue:run, queue:getJob, queue:stats, ...), `jobrt` (the module)
and `pretty` (jobrt.pretty). "=expr" or a bare expression prints its value; an incomplete
chunk continues on the next line (">> "). Callbacks and results print while you type.
Tab completes names: globals, fields (jobrt.<Tab>), methods (queue:<Tab>) and queue names
(queue:run("<Tab>). Ctrl-C clears the line (or interrupts a running entry), Ctrl-D exits. History is kept in
~/.jobrt_history ($JOBRT_HISTORY to change it). With stdin not a terminal, the statements are
read and run one by one without prompts; the exit status is 1 when one of them failed.

Options:
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

local PROMPT, PROMPT2 = 'jobrt> ', '>> '

local function values(...) return ... end

-- Compiles an entry. Returns fn | nil, err, incomplete. An expression is compiled as the
-- argument of a call (not a tail call) so that errors inside it keep their position "stdin:1:".
-- Incomplete: LuaJIT's message ends with "near '<eof>'" for the statement, or for the
-- expression ("1+" is a bad statement but the start of an expression).
local function compile(text, env)
  if text:sub(1, 1) == '=' then text = text:sub(2) end
  local efn, eerr = loadstring('return ' .. text, '=stdin')
  if efn then
    local fn = loadstring('local __values = ...; return __values(' .. text .. '\n)', '=stdin')
    if fn then
      if env then setfenv(fn, env) end
      return function() return fn(values) end
    end
  end
  local fn, err = loadstring(text, '=stdin')
  if fn then
    if env then setfenv(fn, env) end
    return fn
  end
  if err:sub(-7) == "'<eof>'" then return nil, err, true end
  if tostring(eerr):sub(-7) == "'<eof>'" then return nil, (eerr:gsub('^stdin:', 'stdin:', 1)), true end
  return nil, err
end
_M.compile = compile

-- ---- tab completion -------------------------------------------------------------------

local KEYWORDS = { 'and', 'break', 'do', 'else', 'elseif', 'end', 'false', 'for', 'function',
                   'goto', 'if', 'in', 'local', 'nil', 'not', 'or', 'repeat', 'return', 'then',
                   'true', 'until', 'while' }

-- The fields of v a completion may offer: its own string keys (tables) and those of the tables
-- its metatable's __index leads to (objects such as `queue`; strings: the string library).
-- Nothing is called: __index functions are not followed.
local function fields_of(v, out, depth)
  out = out or {}
  depth = depth or 0
  if depth > 8 then return out end
  if type(v) == 'string' then v = string end
  if type(v) == 'table' then
    for k, val in next, v do
      if type(k) == 'string' and out[k] == nil then out[k] = val end
    end
  end
  local mt = (type(v) == 'table' or type(v) == 'userdata') and getmetatable(v)
  if type(mt) == 'table' and type(rawget(mt, '__index')) == 'table' then
    fields_of(rawget(mt, '__index'), out, depth + 1)
  end
  return out
end

-- The value a dotted path names in env ("jobrt", "queue", "jobrt.core"...), or nil.
local function resolve(env, path)
  local v = env
  for part in path:gmatch('[^.]+') do
    if not part:match('^[%a_][%w_]*$') then return nil end
    local f = fields_of(v)
    v = f[part]
    if v == nil then return nil end
  end
  return v
end

-- Candidates for the word under the cursor, each replacing that word whole:
--   line: the whole input line; start, finish: the word's bounds (0-based start; finish is
--   the cursor, as readline passes them); env: the REPL's globals; queues: queue names.
-- Completes globals and keywords (`que` -> queue), fields of tables (`jobrt.sl` ->
-- jobrt.sleep), methods of objects (`queue:enq` -> queue:enqueueJob; strings get the string
-- library), and inside the first string argument of a method call (`queue:run("MA`) the
-- queue names. Names starting with '_' are offered only once '_' is typed. Returns a sorted list.
function _M.complete(line, start, finish, env, queues)
  local word = line:sub(start + 1, finish)
  local before = line:sub(1, start)
  local out = {}
  if before:match('[:.][%a_][%w_]*%(%s*["\']$') then          -- q:method("<here>
    for _, name in ipairs(queues or {}) do
      if name:sub(1, #word) == word then out[#out + 1] = name end
    end
    sort(out)
    return out
  end
  local path, sep, partial = word:match('^(.-)([.:])([%w_]*)$')
  local candidates
  if path and path ~= '' then
    local v = resolve(env, path)
    if v == nil then return out end
    candidates = fields_of(v)
    if sep == ':' then
      for k, val in pairs(candidates) do
        if type(val) ~= 'function' then candidates[k] = nil end
      end
    end
  else
    if not word:match('^[%a_]?[%w_]*$') then return out end
    path, sep, partial = '', '', word
    candidates = fields_of(env)
    for _, k in ipairs(KEYWORDS) do candidates[k] = candidates[k] or true end
  end
  for k in pairs(candidates) do
    if k:sub(1, #partial) == partial and k:match('^[%a_][%w_]*$')
       and (k:sub(1, 1) ~= '_' or partial:sub(1, 1) == '_') then
      out[#out + 1] = path .. sep .. k
    end
  end
  sort(out)
  return out
end

-- Drops the frames of the REPL itself from a traceback.
local function trim(tb)
  tb = tostring(tb)
  local cut = tb:find('\n%s*%[C%]: in function \'xpcall\'')
  if cut then tb = tb:sub(1, cut - 1) end
  return tb
end

-- xpcall handler: the message (any value) with the traceback; just the message when the
-- client raised it itself (a bad argument, a queue without a type: "enqueueJob: ..." says all,
-- and a traceback through stdlib/jobrt/client.lua would only show the client's insides)
local function on_error(e)
  if type(e) ~= 'string' then
    local m = getmetatable(e)
    e = (m and m.__tostring) and tostring(e) or ('error object: ' .. pretty.format(e))
    return traceback(e, 2)
  end
  local info = debug.getinfo(2, 'S')                  -- error() itself is a C frame
  if info and info.what == 'C' then info = debug.getinfo(3, 'S') end
  if info and tostring(info.short_src):find('jobrt/client[%w_]*%.lua$') and e:find('^[%w_]+: ') then
    return e
  end
  return traceback(e, 2)
end

local function format_values(r)
  local parts = {}
  for i = 1, r.n do
    local v = r[i]
    if type(v) == 'table' then parts[i] = pretty.format(v)
    elseif type(v) == 'string' then parts[i] = v
    else parts[i] = pretty.format(v) end
  end
  return concat(parts, '\t')
end

local function history_path()
  local p = os.getenv('JOBRT_HISTORY')
  if p and p ~= '' then return p end
  local home = os.getenv('HOME')
  if home and home ~= '' then return home .. '/.jobrt_history' end
end

function _M.main(argv, cmd)
  local name = 'jobrt ' .. (cmd or 'repl')
  local spec = { redis = 'string', ['log-level'] = 'string', ['log-format'] = 'string' }
  for k, v in pairs(redis.CLI_OPTIONS) do spec[k] = v end
  local opts, pos = args.parse(argv, spec, name)
  if not opts then
    io.stderr:write(pos, '\n')
    return 2
  end
  if opts.help then
    io.stdout:write(USAGE)
    return 0
  end
  if #pos > 0 then
    io.stderr:write(("%s: unexpected argument '%s' (see %s --help)\n"):format(name, pos[1], name))
    return 2
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
  local q, err, refused = client.open(url)
  if not q then
    io.stderr:write(name, ': ', err, refused and ': start redis-server there, or pass --redis URL (or set JOBRT_REDIS)' or '', '\n')
    return 1
  end

  local tty = term.isatty(0)
  local out, errout
  if tty then
    out = term.print
    errout = term.print
  else
    out = function(s) io.stdout:write(s, '\n'); io.stdout:flush() end
    errout = function(s) io.stderr:write(s, '\n'); io.stderr:flush() end
  end
  local function lua_print(...)
    local n = select('#', ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    out(concat(parts, '\t'))
  end
  local saved_report = client.report_error
  client.report_error = function(msg) errout(msg) end

  local env = setmetatable({ queue = q, q = q, jobrt = jobrt, pretty = pretty, print = lua_print },
                           { __index = _G })
  env._G = env

  local hist = tty and history_path() or nil
  if hist then term.read_history(hist) end

  -- Tab completion; the queue names come from RESERVED:QCONFIG, read at start and after each
  -- entry (the completer itself cannot wait for Redis: readline asks it synchronously)
  local queue_names = {}
  local function refresh_queues()
    jobrt.spawn(function()
      local ok, names = pcall(q.queueNames, q)
      if ok and type(names) == 'table' then queue_names = names end
    end)
  end
  if tty then
    term.set_completer(function(line, start, finish)
      return _M.complete(line, start, finish, env, queue_names)
    end)
    refresh_queues()
  end

  local running, done          -- the entry's coroutine, and the cond its end signals
  local sig
  if tty then
    out(("jobrt %s REPL: `queue` is connected to %s. Ctrl-D exits, --help for more.")
      :format(jobrt._VERSION, q.r:info().addr))
    sig = jobrt.on_signal('SIGINT', function()
      if running then
        term.set_busy(nil)
        jobrt.cancel(running)
        running = nil
        done:signal('interrupted')
      else
        _M.cancelled = true
        term.cancel_line(PROMPT)
      end
    end)
  end

  local failures = 0
  local buf
  while true do
    local line
    if tty then
      _M.cancelled = false
      line = term.readline(buf and PROMPT2 or PROMPT)
      if _M.cancelled then buf = nil end
    else
      line = term.read_line()
    end
    if line == nil then
      if buf then                         -- the input ended inside a statement
        local _, err = compile(buf, env)
        failures = failures + 1
        errout(tostring(err) .. ' (the input ended before the statement was complete)')
      end
      break
    end
    if line == false then
      buf = nil
    elseif buf or line:find('%S') then
      buf = buf and (buf .. '\n' .. line) or line
      local fn, err, incomplete = compile(buf, env)
      if not incomplete then
        local entry = buf
        buf = nil
        if hist then
          term.add_history((entry:gsub('\n', ' ')))
          term.write_history(hist)
        end
        if not fn then
          failures = failures + 1
          errout(err)
        else
          done = jobrt.cond()
          local d, res = done, nil
          if tty then jit.off(fn, true) end   -- interpreted, so Ctrl-C can stop a busy loop
          local co = jobrt.spawn(function()
            if tty then term.set_busy(coroutine.running()) end
            local r = { n = 0 }
            local function pack(okk, ...)
              r.n = select('#', ...)
              for i = 1, r.n do r[i] = select(i, ...) end
              return okk
            end
            local okk = pack(xpcall(fn, on_error))
            if tty then term.set_busy(nil) end
            res = { okk, r }
            d:signal()
          end)
          if not res then                 -- it waits for something: so do we (Ctrl-C ends it)
            running = co
            local _, why = d:wait()
            if why == 'interrupted' then res = { false, 'interrupted' } end
          end
          running = nil
          if tty then refresh_queues() end
          local okk, r = res[1], res[2]
          if okk == false and r == 'interrupted' then
            failures = failures + 1
            errout('interrupted')
          elseif not okk then
            failures = failures + 1
            errout(trim(r[1]))
          elseif r.n > 0 then
            out(format_values(r))
          end
        end
      end
    end
  end

  client.report_error = saved_report
  if tty then
    term.set_completer(nil)
    io.stdout:write('\n')
    io.stdout:flush()
    if hist then term.write_history(hist) end
    sig:close()
    q:close()
    jobrt.exit(0)         -- what the session left running ends with it
    return 0
  end
  return failures > 0 and 1 or 0
end

return _M
