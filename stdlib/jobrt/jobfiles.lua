-- jobrt.jobfiles: which files under the served paths are job files, and loading them.
--
-- The rule (README "Organising job files"): inside a served directory every *.lua file is a
-- job file, except the files in a folder named `lib` (at any depth), which hold helper
-- modules and are never served. Names starting with "." are skipped. A file named on the
-- command line is a job file unless it sits in a `lib` folder (then it is refused: name the
-- job files that require it).
--
-- Helpers are found by `require`: each served directory DIR goes on package.path as
-- DIR/lib/?.lua, DIR/lib/?/init.lua, DIR/?.lua, DIR/?/init.lua (and DIR/lib/?.so on
-- package.cpath), in front of the default path; for a served file, DIR is its folder. So a
-- job file requires jobs/lib/util.lua as `require 'util'` (or 'lib.util'), and
-- jobs/billing/lib/money.lua as `require 'billing.lib.money'`. Requiring a job file is an
-- error: a job file is served, never a module (the two are never mistaken for each other).
--
--   jobfiles.find(paths) -> files | nil, message
--       paths: list of directories and files as given; files: the job files, sorted per path.
--   jobfiles.load(paths) -> desc, nil, info | nil, message
--       desc: the merged, checked description (jobrt.jobdefs.load_description form);
--       info = { files = {...}, types = { [queue] = { type =, source = } } } (declared `_type`s,
--       see jobrt.queuetypes). Each file runs once, in order; a file that fails to load, or
--       returns something that is not a jobDescription, is the message (file:line first).
--   jobfiles.reload(paths) -> desc, nil, info | nil, message
--       jobfiles.load once more, from the files as they are now (hot reload): the helper
--       modules loaded from the served directories are taken out of package.loaded first, so
--       the job files get fresh copies (every other module stays as it is). When a file fails,
--       package.loaded is put back as it was, so whatever still runs the previous definitions
--       (and a later require of a helper) keeps the previous helpers. The previous definitions
--       keep the helper modules they required when they loaded: a job in flight never sees
--       a mix of old and new code (a require run inside a handler, rather than at the top of
--       the file, returns whichever version is loaded at that moment). On success
--       info.restore() puts package.loaded back as it was before this reload (for a caller
--       whose own checks then refuse the new definitions).
--   jobfiles.helper_modules() -> { [module name] = file }  modules loaded from the served
--       directories so far (what a reload has to forget).
local proc = require 'jobrt.core.proc'
local jobdefs = require 'jobrt.jobdefs'
local queuetypes = require 'jobrt.queuetypes'

local type, ipairs, pairs, tostring, xpcall, loadfile = type, ipairs, pairs, tostring, xpcall, loadfile
local fmt, concat, sort = string.format, table.concat, table.sort
local traceback = debug.traceback

local _M = {}

local job_files = {}          -- path -> true: every job file found so far (for the guard)
local served_dirs = {}        -- dir -> true: already on package.path
local helpers = {}            -- module name -> file, loaded through the served directories

local function strip(path)
  local p = path:gsub('/+$', '')
  return p == '' and '/' or p
end

local function dirname(file)
  return file:match('^(.*)/[^/]*$') or '.'
end

local function basename(path)
  return path:match('([^/]*)$')
end

-- Appends the job files under path (recursively, sorted) to out; nil, err on failure.
local function scan(path, out)
  local entries, derr = proc.scandir(path)
  if not entries then return nil, derr end
  sort(entries, function(a, b) return a.name < b.name end)
  for _, e in ipairs(entries) do
    local full = (path == '/' and '' or path) .. '/' .. e.name
    if e.name:sub(1, 1) == '.' then
      -- hidden: skipped
    elseif e.type == 'dir' then
      if e.name ~= 'lib' then
        local ok, err = scan(full, out)
        if not ok then return nil, err end
      end
    elseif (e.type == 'file' or e.type == 'link') and e.name:match('%.lua$') then
      out[#out + 1] = full
    end
  end
  return out
end

function _M.find(paths)
  local files = {}
  for _, given in ipairs(paths) do
    local p = strip(given)
    local kind, err = proc.stat(p)
    if not kind then return nil, fmt('cannot read %s', err) end
    if kind == 'file' then
      if basename(dirname(p)) == 'lib' then
        return nil, fmt("%s is in a lib/ folder, where helper modules live (never served): name the job files that require it, or their folder", given)
      end
      files[#files + 1] = p
    elseif kind == 'dir' then
      if basename(p) == 'lib' then
        return nil, fmt("%s is a lib/ folder, where helper modules live (never served): serve the folder that holds it", given)
      end
      local ok, serr = scan(p, files)
      if not ok then return nil, fmt('cannot read %s', serr) end
    else
      return nil, fmt('cannot read %s: not a file or directory', given)
    end
  end
  return files
end

-- Refuses `require` of a job file (installed once, in front of the file searchers).
local function guard(name)
  local path = package.searchpath(name, package.path)
  if path and job_files[path] then
    error(fmt("require '%s' found %s, which is a job file (served by jobrt, never a module): move the shared code to a lib/ folder, e.g. %s/lib/%s.lua, and require that",
      name, path, dirname(path), name:gsub('%.', '/')), 2)
  end
  if path then
    for dir in pairs(served_dirs) do
      if path:sub(1, #dir + 1) == dir .. '/' then helpers[name] = path end
    end
  end
  return fmt("\n\tno job-file guard match for '%s'", name)
end

local guard_installed = false
local function install_guard()
  if guard_installed then return end
  guard_installed = true
  local loaders = package.loaders
  -- after preload and the embedded stdlib, before the Lua file searcher
  local at = 3
  for i = #loaders, at, -1 do loaders[i + 1] = loaders[i] end
  loaders[at] = guard
end

-- Puts DIR's helper folders on package.path (once per DIR).
local function serve_dir(dir)
  if served_dirs[dir] then return end
  served_dirs[dir] = true
  local d = dir == '/' and '' or dir
  package.path = concat({ d .. '/lib/?.lua', d .. '/lib/?/init.lua', d .. '/?.lua', d .. '/?/init.lua',
    package.path }, ';')
  package.cpath = d .. '/lib/?.so;' .. package.cpath
end

-- "module 'x' not found" gets a hint about where helpers go.
local function hint(msg, file)
  local name = tostring(msg):match("module '([^']+)' not found")
  if not name then return msg end
  return fmt("%s\n(helper modules live in a lib/ folder beside the job files: %s/lib/%s.lua is found as require '%s')",
    msg, dirname(file), name:gsub('%.', '/'), name)
end

function _M.load(paths)
  local files, ferr = _M.find(paths)
  if not files then return nil, ferr end
  if #files == 0 then
    return nil, fmt("no *.lua job files under %s: add one returning { QUEUENAME = { myJob = function(args, job) return args end } }",
      concat(paths, ', '))
  end
  for _, given in ipairs(paths) do
    local p = strip(given)
    serve_dir(proc.stat(p) == 'dir' and p or dirname(p))
  end
  for _, f in ipairs(files) do job_files[f] = true end
  install_guard()
  local desc, types = {}, {}
  for _, file in ipairs(files) do
    local chunk, err = loadfile(file)
    if not chunk then return nil, fmt('%s (syntax error: fix the file)', err) end
    local ok, ret = xpcall(chunk, traceback)
    if not ok then return nil, fmt('%s: error while loading: %s', file, hint(ret, file)) end
    local plain, serr = queuetypes.extract(ret, file, types)
    if not plain then return nil, serr end
    local _, lerr = jobdefs.load_description(plain, file, desc)
    if lerr then return nil, lerr end
  end
  return desc, nil, { files = files, types = types }
end

function _M.reload(paths)
  local saved, saved_helpers, saved_files = {}, helpers, job_files
  for name in pairs(helpers) do
    saved[name] = package.loaded[name]
    package.loaded[name] = nil
  end
  helpers, job_files = {}, {}          -- what this load requires and finds, afresh
  local mine = helpers
  -- forget this attempt's modules (a module that raised while loading leaves a marker in
  -- package.loaded that would make every later require of it fail), restore the previous
  local function restore()
    if helpers ~= mine then return end  -- another reload came since
    for name in pairs(helpers) do package.loaded[name] = nil end
    for name, mod in pairs(saved) do package.loaded[name] = mod end
    helpers, job_files = saved_helpers, saved_files
  end
  local desc, err, info = _M.load(paths)
  if desc then
    info.restore = restore
    return desc, nil, info
  end
  restore()
  return nil, err
end

function _M.helper_modules()
  local out = {}
  for k, v in pairs(helpers) do out[k] = v end
  return out
end

return _M
