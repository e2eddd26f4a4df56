-- jobrt.watcher: tells when the Lua files under the served paths change (`jobrt work --watch`).
--
-- Built on jobrt.core.fswatch (runtime/fswatch.c, libuv's uv_fs_event), which on Linux watches
-- one directory's own entries (inotify is not recursive): this module watches every directory
-- under a served directory (lib/ folders included, hidden ones such as .git left out), adds a
-- watch for each new subdirectory and drops the watches of removed ones. For a served file it
-- watches the file's folder and that folder's lib/ tree (where its helpers are). The parent of
-- a served folder is watched for that folder's name only: a folder removed and made again (a
-- deploy that replaces it) is watched again and served.
--
-- Bursts are coalesced: an editor saves with several writes and renames, a checkout touches
-- many files. on_change runs once things settle: `settle` seconds after the last event that
-- matters (at most `max_wait` seconds after the first, so a file written without pause still
-- gets reloaded). Events that matter: a name ending in .lua, a directory created or removed,
-- or an event the system did not name; hidden names (".x.lua.swp", ".#x.lua") and other
-- files ("x.lua~", "4913") are ignored. A change that leaves the files as they were (a touch,
-- a save without edits) is ignored too: the Lua sources are compared with what was seen last.
--
--   watcher.new(paths, on_change[, opts]) -> w | nil, message
--       paths: directories and files, as given to `jobrt work`.
--       on_change(names): runs in a coroutine of its own; names: the sorted paths whose
--           events were coalesced into this call. The next call can come while one runs.
--       opts.settle (seconds, default 0.2), opts.max_wait (seconds, default 2), opts.seen
--       (sources as the caller loaded them: when the files differ once the watches are in
--       place, on_change runs at once, since that change had no event).
--       Errors: a path that is not there ("cannot watch PATH: no such file or directory"),
--       one the system refuses to watch ("EACCES: cannot watch ...", the inotify limit
--       "ENOSPC: ..."). A subdirectory that cannot be watched later is logged (warn).
--   w:dirs() -> sorted list of the directories watched now
--   w.settled           how many bursts have settled so far (on_change called or not)
--   w:close()           stops watching (every handle and the timer are closed)
--   watcher.sources(paths) -> { [file] = text }  every *.lua under the paths (helpers in lib/
--       included) as it is now: what a change is judged against.
--   watcher.same(a, b) -> boolean  two sources tables hold the same files and texts
local jobrt = require 'jobrt'
local fswatch = require 'jobrt.core.fswatch'
local proc = require 'jobrt.core.proc'

local pairs, ipairs, setmetatable, tostring = pairs, ipairs, setmetatable, tostring
local sort, concat, min = table.sort, table.concat, math.min
local monotime = jobrt.monotime

local _M = {}
local Watcher = {}
Watcher.__index = Watcher

local function strip(path)
  local p = path:gsub('/+$', '')
  return p == '' and '/' or p
end

local function dirname(file)
  return file:match('^(.*)/[^/]*$') or '.'
end

local function join(dir, name)
  return (dir == '/' and '' or dir) .. '/' .. name
end

-- Adds dir and every directory under it (hidden ones and symbolic links left out) to out.
local function tree(dir, out)
  out[dir] = true
  local entries = proc.scandir(dir)
  if not entries then return end
  for _, e in ipairs(entries) do
    if e.type == 'dir' and e.name:sub(1, 1) ~= '.' then tree(join(dir, e.name), out) end
  end
end

-- The directories to watch for `paths`: { [dir] = true (every entry matters) | { [name] =
-- true } (the parent of a served folder: only that folder's name matters, so that a folder
-- removed and made again, as some deploys do, is seen) }, and the message about the first
-- path that is not there.
local function wanted(paths)
  local out, missing = {}, nil
  local parents = {}
  for _, given in ipairs(paths) do
    local p = strip(given)
    local kind, err = proc.stat(p)
    local parent = dirname(p)
    if kind ~= 'file' and p ~= '/' and parent ~= p and proc.stat(parent) == 'dir' then
      parents[parent] = parents[parent] or {}
      parents[parent][p:match('([^/]*)$')] = true
    end
    if kind == 'dir' then
      tree(p, out)
    elseif kind then
      local d = dirname(p)
      out[d] = true
      if proc.stat(join(d, 'lib')) == 'dir' then tree(join(d, 'lib'), out) end
    else
      missing = missing or ('cannot watch ' .. tostring(err))
    end
  end
  for dir, names in pairs(parents) do
    if not out[dir] then out[dir] = names end
  end
  return out, missing
end

function _M.sources(paths)
  local files = {}
  local function add_tree(dir)
    local entries = proc.scandir(dir)
    if not entries then return end
    for _, e in ipairs(entries) do
      local full = join(dir, e.name)
      if e.name:sub(1, 1) == '.' then
        -- hidden: never served, never a helper found by the rule
      elseif e.type == 'dir' then
        add_tree(full)
      elseif e.name:match('%.lua$') then
        files[full] = true
      end
    end
  end
  for _, given in ipairs(paths) do
    local p = strip(given)
    if proc.stat(p) == 'dir' then
      add_tree(p)
    else
      files[p] = true
      local lib = join(dirname(p), 'lib')
      if proc.stat(lib) == 'dir' then add_tree(lib) end
    end
  end
  local out = {}
  for file in pairs(files) do
    local f = io.open(file, 'rb')
    if f then
      out[file] = f:read('*a') or ''
      f:close()
    end
  end
  return out
end

function _M.same(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

function _M.new(paths, on_change, opts)
  opts = opts or {}
  local self = setmetatable({
    paths = paths, on_change = on_change,
    settle = opts.settle or 0.2, max_wait = opts.max_wait or 2,
    watches = {},            -- dir -> fswatch handle
    pending = {},            -- path -> true: events since the last call
    first = nil,             -- monotime of the first event since the last call
    timer = jobrt.timer(),
    closed = false,
    settled = 0,             -- bursts settled so far (whether or not on_change ran)
  }, Watcher)
  local want, missing = wanted(paths)
  if missing then
    self:close()
    return nil, missing
  end
  self.want = want
  for dir in pairs(want) do
    local ok, err = self:watch(dir)
    if not ok then
      self:close()
      return nil, err
    end
  end
  self.seen = _M.sources(paths)
  if opts.seen and not _M.same(self.seen, opts.seen) then
    -- changed between the caller's load and the watches: that change has no event of its own
    self.seen = opts.seen
    self.pending['(before watching began)'] = true
    self.first = monotime()
    self.timer:start(0, function() self:fire() end)
  end
  return self
end

-- Starts watching dir: true | nil, err.
function Watcher:watch(dir)
  local w, err = fswatch.watch(dir, function(name, event, eerr) self:event(dir, name, event, eerr) end)
  if not w then return nil, err end
  self.watches[dir] = w
  return true
end

-- Does an event about `name` in `dir` matter?
function Watcher:matters(dir, name)
  local only = self.want[dir]
  if type(only) == 'table' then return name ~= nil and only[name] == true end
  if name == nil then return true end
  if name:sub(1, 1) == '.' then return false end
  if name:match('%.lua$') then return true end
  local full = join(dir, name)
  return self.watches[full] ~= nil or proc.stat(full) == 'dir'
end

function Watcher:event(dir, name, event, err)
  if self.closed then return end
  if event == 'error' then
    jobrt.log('warn', 'watching %s: %s', dir, tostring(err))
    return
  end
  if not self:matters(dir, name) then return end
  self.pending[name and join(dir, name) or dir] = true
  local now = monotime()
  self.first = self.first or now
  local delay = min(self.settle, self.first + self.max_wait - now)
  self.timer:start(delay > 0 and delay or 0, function() self:fire() end)
end

-- Things settled: watch the directories as they are now, and tell on_change if a Lua source
-- changed.
function Watcher:fire()
  if self.closed then return end
  self.first = nil
  self.settled = self.settled + 1
  local names = {}
  for path in pairs(self.pending) do names[#names + 1] = path end
  sort(names)
  self.pending = {}
  self:sync()
  local now = _M.sources(self.paths)
  if _M.same(now, self.seen) then
    jobrt.log('debug', 'watch: %s changed, but no Lua source did', concat(names, ', '))
    return
  end
  self.seen = now
  self.on_change(names)
end

-- Adds watches for new directories and closes those of removed ones.
function Watcher:sync()
  local want, missing = wanted(self.paths)
  if missing and missing ~= self.missing then
    jobrt.log('warn', 'watch: %s (removed? it is served again once it is back)', missing)
  end
  self.want = want
  self.missing = missing
  for dir, w in pairs(self.watches) do
    if not want[dir] then
      w:close()
      self.watches[dir] = nil
    end
  end
  for dir in pairs(want) do
    if not self.watches[dir] then
      local ok, err = self:watch(dir)
      if not ok then jobrt.log('warn', 'watch: %s (changes there are not seen)', tostring(err)) end
    end
  end
end

function Watcher:dirs()
  local out = {}
  for dir in pairs(self.watches) do out[#out + 1] = dir end
  sort(out)
  return out
end

function Watcher:close()
  if self.closed then return end
  self.closed = true
  for _, w in pairs(self.watches) do w:close() end
  self.watches = {}
  self.timer:close()
end

return _M
