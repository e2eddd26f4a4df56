-- jobrt.scripts: loads the server-side queue scripts into Redis and calls them by EVALSHA.
--
--   local scripts = require 'jobrt.scripts'
--   local s, err = scripts.load(r)            -- r from jobrt.redis.connect; SCRIPT LOAD of each
--   local reply, err, code, kind = s:call(name, keys, argv)
--       -- EVALSHA sha #keys keys... argv...; on a NOSCRIPT error reply (code "EREDIS", kind
--       -- "NOSCRIPT": Redis restarted, SCRIPT FLUSH) it loads that script again and retries once.
--   scripts.NAMES                             -- the operation names, one per lua-server-scripts/*.lua
--   scripts.source(name) -> text | nil, err   -- the script text (embedded in the binary, or read
--                                             -- from lua-server-scripts/ when run from a checkout)
-- Errors come back as the connection gives them: nil, "message" (Redis' text unchanged), code
-- (see jobrt.redis); wrong argument types raise.

local _M = {}
local mt = { __index = _M }

local type, error, pcall, require, tostring = type, error, pcall, require, tostring
local io_open = io.open
local unpack = unpack or table.unpack
local str_format = string.format

_M.NAMES = { 'register', 'enqueue', 'reserve', 'renew', 'complete', 'requeue_expired', 'release', 'delete',
             'get', 'retry_failed', 'delete_failed', 'list_failed', 'stats',
             -- scheduling and flow control (issue 13)
             'pause', 'limit', 'progress', 'postpone', 'drain', 'cron_set', 'cron_delete',
             -- flows (issue 14)
             'flow_deliver', 'flow_take', 'flow_ack' }

local embedded      -- require 'jobrt.server_scripts', or false when the host has none

-- the directory of lua-server-scripts/ for a checkout: env JOBRT_SCRIPTS_DIR, else relative to cwd
local function scripts_dir()
  return os.getenv('JOBRT_SCRIPTS_DIR') or 'lua-server-scripts'
end

function _M.source(name)
  if type(name) ~= 'string' then error('jobrt.scripts.source: name must be a string', 2) end
  if embedded == nil then
    local ok, mod = pcall(require, 'jobrt.server_scripts')
    embedded = ok and type(mod) == 'table' and mod or false
  end
  if embedded and embedded[name] then return embedded[name] end
  local path = scripts_dir() .. '/' .. name .. '.lua'
  local f = io_open(path, 'rb')
  if not f then
    return nil, str_format("jobrt.scripts: no script '%s' (not embedded, and no %s)", name, path)
  end
  local text = f:read('*a')
  f:close()
  return text
end

-- SCRIPT LOAD one script; returns its sha or nil, err
local function load_one(self, name)
  local text, err = _M.source(name)
  if not text then return nil, err end
  local sha, code
  sha, err, code = self.r:call('SCRIPT', 'LOAD', text)
  if not sha then return nil, str_format('jobrt.scripts: SCRIPT LOAD %s: %s', name, tostring(err)), code end
  self.sha[name] = sha
  return sha
end

-- Loads every script on connection r. Returns the loader, or nil, err.
function _M.load(r)
  if type(r) ~= 'table' and type(r) ~= 'userdata' then
    error('jobrt.scripts.load: expected a Redis connection, got ' .. type(r), 2)
  end
  local self = setmetatable({ r = r, sha = {} }, mt)
  for i = 1, #_M.NAMES do
    local ok, err, code = load_one(self, _M.NAMES[i])
    if not ok then return nil, err, code end
  end
  return self
end

-- Calls script `name` with the keys and argv arrays. Returns the reply, or nil, err.
function _M:call(name, keys, argv)
  local sha = self.sha[name]
  if not sha then
    local err
    sha, err = load_one(self, name)
    if not sha then return nil, err end
  end
  local nk, na = #keys, #argv
  local cmd = { 'EVALSHA', sha, nk }
  for i = 1, nk do cmd[3 + i] = keys[i] end
  for i = 1, na do cmd[3 + nk + i] = argv[i] end
  local res, err, code, kind = self.r:call(unpack(cmd, 1, 3 + nk + na))
  if res == nil and code == 'EREDIS' and kind == 'NOSCRIPT' then
    sha, err, code = load_one(self, name)
    if not sha then return nil, err, code end
    cmd[2] = sha
    res, err, code, kind = self.r:call(unpack(cmd, 1, 3 + nk + na))
  end
  return res, err, code, kind
end

return _M
