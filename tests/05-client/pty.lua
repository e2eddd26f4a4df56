-- tests/05-client/pty.lua: drive a jobrt command through a pseudo-terminal, for the REPL specs.
-- Uses script(1) from util-linux (Debian bsdutils, installed by default): the command runs on
-- the pty that script creates; we write keystrokes into script's stdin (a FIFO we hold open)
-- and read what the terminal showed from script's stdout.
--
--   local pty = require 'tests.05-client.pty'
--   local t = pty.spawn({ "repl" }, { env = { HOME = dir } })
--   t:send("x = 1\n"); t:expect("jobrt> ")       -- waits (with a deadline) for the text
--   t:close() -> exit status                      -- sends Ctrl-D and waits for the exit
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'

local P = {}
P.__index = P

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- True when script(1) is there to make a pseudo-terminal.
function P.available()
  return os.execute('script --version >/dev/null 2>&1') == 0
end

function P.spawn(args, opts)
  opts = opts or {}
  local dir = h.tmpdir()
  local fifo = dir .. '/stdin'
  assert(os.execute('mkfifo ' .. shell_quote(fifo)) == 0, 'mkfifo failed')
  -- read+write: the open does not block, and the reader sees EOF only when we close it
  local w = assert(io.open(fifo, 'r+'))
  local words = { shell_quote(h.jobrt_bin) }
  for _, a in ipairs(args) do words[#words + 1] = shell_quote(a) end
  -- script(1) runs the line with $SHELL -c; `exec` makes jobrt the terminal's foreground
  -- process itself, so Ctrl-C reaches only jobrt (dash, CI's shell, would die of it first)
  local cmdline = 'exec ' .. table.concat(words, ' ')
  local env = { TERM = 'dumb', COLUMNS = '200', LINES = '50' }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local p = assert(proc.spawn{
    file = '/bin/sh',
    args = { '/bin/sh', '-c', 'stty -F /dev/null 2>/dev/null; exec script -qfec "$0" /dev/null < "$1"', cmdline, fifo },
    env = h.environ(env), capture = true, cwd = opts.cwd,
  })
  return setmetatable({ p = p, w = w, dir = dir, pos = 1 }, P)
end

function P:send(s)
  self.w:write(s)
  self.w:flush()
end

-- The terminal output so far, with the carriage returns dropped.
function P:output()
  local out = self.p:output()
  return (out:gsub('\r', ''))
end

-- Waits until `text` (plain) shows after the last match; returns the output up to it.
function P:expect(text, timeout)
  local s, e
  local ok, err = pcall(h.wait_for, function()
    s, e = self:output():find(text, self.pos, true)
    return s
  end, timeout or 10, ('%q on the terminal'):format(text))
  if not ok then
    error(tostring(err) .. '\n--- terminal output so far ---\n' .. self:output():sub(self.pos), 2)
  end
  local seen = self:output():sub(self.pos, e)
  self.pos = e + 1
  return seen
end

-- Ctrl-D (after a fresh line), then waits for the exit. Returns exit status.
function P:close(keys)
  if not self.closed then
    self.closed = true
    self:send(keys or '\4')
    local guard = jobrt.timer()
    local p = self.p
    guard:start(10, function() p:kill('SIGKILL') end)
    self.code = p:wait()
    guard:close()
    self.w:close()
    os.execute('rm -rf ' .. shell_quote(self.dir))
  end
  return self.code
end

function P:kill()
  if not self.closed then
    self.closed = true
    self.p:kill('SIGKILL')
    self.p:wait()
    self.w:close()
    os.execute('rm -rf ' .. shell_quote(self.dir))
  end
end

return P
