-- jobrt.exec: run a command on the loop. os.execute and io.popen block the whole process (every
-- job of the worker waits, and nothing can interrupt them); jobrt.exec yields instead, has a
-- timeout, and the command is killed when the job that started it ends (timeout, delete, lost
-- lease).
--
--   local res, err, code = jobrt.exec(cmd[, opts])
--     cmd   a shell command line (string: run with /bin/sh -c), or an argv array
--           { "file", "arg1", ... } (no shell; "file" is searched in PATH)
--     opts  timeout (seconds; default none): the command is killed (SIGTERM, then SIGKILL
--             after 2 s) and exec returns nil, "timed out after N s", "ETIMEDOUT"
--           stdin (string) written to the command's standard input; env ({ "K=V", ... },
--             replaces the environment) and cwd
--   res   { code = exit status, signal = name of the signal that killed it or nil,
--           stdout = text, stderr = text }: a command that ran and exited, whatever its status
--   err   why it could not run: "cannot start x: ..." (code "ESPAWN"), or the timeout
-- Must run inside a coroutine of the loop (every handler is one).
local proc = require 'jobrt.core.proc'
local core = require 'jobrt.core'
local timer = require 'jobrt.core.timer'

local type, tostring, ipairs = type, tostring, ipairs
local fmt = string.format

local function exec(cmd, opts)
  opts = opts or {}
  if type(opts) ~= 'table' then error('jobrt.exec: opts must be a table, got ' .. type(opts), 2) end
  local argv
  if type(cmd) == 'string' then
    argv = { '/bin/sh', '-c', cmd }
  elseif type(cmd) == 'table' and type(cmd[1]) == 'string' then
    argv = {}
    for i, a in ipairs(cmd) do argv[i] = tostring(a) end
  else
    error('jobrt.exec: cmd must be a command line (string) or an argv array { "file", ... }, got ' .. type(cmd), 2)
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= 'number' or opts.timeout <= 0) then
    error('jobrt.exec: opts.timeout must be seconds > 0, got ' .. tostring(opts.timeout), 2)
  end
  local p, err = proc.spawn{ file = argv[1], args = argv, env = opts.env, cwd = opts.cwd,
                             stdin = opts.stdin, capture = true }
  if not p then return nil, tostring(err), 'ESPAWN' end
  -- the command ends with the job that started it
  local timed_out = false
  local t
  local scope = core.scope_of()
  if scope then
    scope:on_end(function()
      if t then t:close() end
      if not p:exited() then p:kill('SIGKILL') end
    end)
  end
  if opts.timeout then
    t = timer.timer()
    t:start(opts.timeout, function()
      if p:exited() then return end
      timed_out = true
      p:kill('SIGTERM')
      timer.sleep(2)
      if not p:exited() then p:kill('SIGKILL') end
    end)
  end
  local code, sig = p:wait()
  if t then t:close() end
  if timed_out then return nil, fmt('timed out after %g s', opts.timeout), 'ETIMEDOUT' end
  local out, errout = p:output()
  return { code = code, signal = sig, stdout = out or '', stderr = errout or '' }
end

return exec
