-- jobrt.scripts: calls the server-side queue scripts by EVALSHA.
--
--   local scripts = require 'jobrt.scripts'
--   local s, err = scripts.load(r)            -- r from jobrt.redis.connect; sends nothing
--   local reply, err, code, kind = s:call(name, keys, argv)
--       -- EVALSHA sha #keys keys... argv... with the script's SHA-1, known without asking Redis
--       -- (computed at build time for the scripts in the binary, else by jobrt.sha1); on an
--       -- error reply starting "NOSCRIPT" (a fresh Redis, a restart, SCRIPT FLUSH) it sends
--       -- SCRIPT LOAD of that script and retries once. So a connection loads only the scripts
--       -- Redis lacks, when first used, instead of every script at connect (BullMQ does the same).
--   scripts.NAMES                             -- the operation names, one per lua-server-scripts/*.lua
--   scripts.source(name) -> text | nil, err   -- the script text (embedded in the binary, or read
--                                             -- from lua-server-scripts/ when run from a checkout)
--   scripts.sha(name) -> sha | nil, err       -- its SHA-1, lowercase hex
-- Errors come back as the connection gives them: nil, "message" (Redis' text unchanged), code
-- (see jobrt.redis; a NOSCRIPT reply is code "EREDIS", kind "NOSCRIPT"); wrong argument types
-- raise.

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
             -- performance (issue 16)
             'enqueue_bulk',
             -- flows (issue 14)
             'flow_deliver', 'flow_take', 'flow_ack' }

local embedded      -- require 'jobrt.server_scripts', or false when the host has none
local embedded_sha  -- require 'jobrt.server_script_shas', or false
local computed_sha = {}   -- name -> sha of a script read from a checkout

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

function _M.sha(name)
  if type(name) ~= 'string' then error('jobrt.scripts.sha: name must be a string', 2) end
  if embedded_sha == nil then
    local ok, mod = pcall(require, 'jobrt.server_script_shas')
    embedded_sha = ok and type(mod) == 'table' and mod or false
  end
  if embedded == nil then _M.source(name) end
  if embedded and embedded[name] and embedded_sha and embedded_sha[name] then return embedded_sha[name] end
  local sha = computed_sha[name]
  if sha then return sha end
  local text, err = _M.source(name)
  if not text then return nil, err end
  sha = require('jobrt.sha1').hex(text)
  computed_sha[name] = sha
  return sha
end

-- SCRIPT LOAD one script; returns its sha or nil, err, code
local function load_one(self, name)
  local text, err = _M.source(name)
  if not text then return nil, err end
  local sha, code
  sha, err, code = self.r:call('SCRIPT', 'LOAD', text)
  if not sha then return nil, str_format('jobrt.scripts: SCRIPT LOAD %s: %s', name, tostring(err)), code end
  self.sha[name] = sha
  return sha
end

-- The script caller for connection r (nothing is sent: see call). Returns it.
function _M.load(r)
  if type(r) ~= 'table' and type(r) ~= 'userdata' then
    error('jobrt.scripts.load: expected a Redis connection, got ' .. type(r), 2)
  end
  return setmetatable({ r = r, sha = {} }, mt)
end

-- Calls script `name` with the keys and argv arrays. Returns the reply, or nil, err, code, kind.
function _M:call(name, keys, argv)
  local sha = self.sha[name]
  if not sha then
    local err
    sha, err = _M.sha(name)
    if not sha then return nil, err end
    self.sha[name] = sha
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
