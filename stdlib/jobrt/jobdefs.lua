-- jobrt.jobdefs: job definitions (seed 000's jobDescription tables), checked and normalized.
--
--   local jobdefs = require 'jobrt.jobdefs'
--   jobdefs.load_description(desc, source, into) -> { [queue] = { [job] = {handler=, timeout=,
--       retries=, source=} } } | nil, message
--       desc: { QUEUENAME = { myJob = function(args, job) ... end,
--                             slow = { handler = fn, timeout = 30, retries = 3 } } }
--       source: where desc came from (a file name), for messages ("jobDescription" if nil)
--       into: a normalized table to merge into (several files serve one worker); a job defined
--             twice is an error naming both places
--       timeout is in seconds (> 0), retries a whole number >= 0 (extra attempts after a failure)
--       cron (optional): 'EXPR', or { 'EXPR', tz = 'Europe/Berlin', args = {...}, missed =
--             'once'|'skip' }: the job is also enqueued on that schedule (jobrt.cron_runner;
--             normalized to spec.cron = { schedule=, tz=, args= JSON text, missed= })
-- Messages name the file and line of the offending definition and the fix.
local naming = require 'jobrt.names'

local type, pairs, ipairs, tostring, next, pcall, require = type, pairs, ipairs, tostring, next, pcall, require
local fmt, floor = string.format, math.floor

local _M = {}

local JOB_FIELDS = { handler = "function", timeout = "number", retries = "number",
                     cron = "cron",        -- a string or a table: check_cron
                     source = "string" }   -- source: set when loaded (so loading twice is a no-op)

-- `cron = ...` of a job definition -> { schedule=, tz=, args= JSON text, missed= } or nil, message
local function check_cron(v, where)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then
    return nil, fmt("%s.cron must be a cron expression ('*/5 * * * *', '@hourly', '@every 30s') or a table { 'EXPR', tz = ZONE, args = {...}, missed = 'once'|'skip' }, got %s",
      where, type(v))
  end
  if type(v.schedule) == "string" and type(v.tz) == "string" and type(v.args) == "string" and v[1] == nil then
    return v                             -- already normalized (a description loaded twice)
  end
  for k in pairs(v) do
    if k ~= 1 and k ~= "tz" and k ~= "args" and k ~= "missed" and k ~= "hash" then
      return nil, fmt("%s.cron has unknown field '%s' (known: [1] the expression, tz, args, missed, hash)", where, tostring(k))
    end
  end
  local cron, tz = require("jobrt.cron"), require("jobrt.tz")
  local ok, err = cron.parse(v[1])
  if not ok then return nil, fmt("%s.cron: %s", where, err) end
  local zone = v.tz or "UTC"
  if type(zone) ~= "string" then return nil, fmt("%s.cron.tz must be a zone name such as 'Europe/Berlin', got %s", where, type(zone)) end
  ok, err = tz.load(zone)
  if not ok then return nil, fmt("%s.cron: %s", where, err) end
  if v.missed ~= nil and v.missed ~= "once" and v.missed ~= "skip" then
    return nil, fmt("%s.cron.missed must be 'once' (one run for the ticks missed while no worker ran) or 'skip', got %s", where, tostring(v.missed))
  end
  local args = "{}"
  if v.args ~= nil then
    local text, jerr = require("jobrt.json").encode(v.args, { sort = true, name = where .. ".cron.args" })
    if not text or type(v.args) ~= "table" then
      return nil, fmt("%s.cron.args must be a table that encodes as JSON: %s", where, text and ("got " .. type(v.args)) or jerr)
    end
    args = text
  end
  if v.hash ~= nil and (type(v.hash) ~= "string" or naming.ref(v.hash)) then
    return nil, fmt("%s.cron.hash (the jobs' jobHash) %s", where, type(v.hash) == "string" and naming.ref(v.hash) or ("must be a string, got " .. type(v.hash)))
  end
  return { schedule = v[1], tz = zone, args = args, missed = v.missed or "once", hash = v.hash }
end

-- "file:line" of the first line of file `source` that assigns `name` (e.g. `welcome =`), so a
-- message about a job definition points at it; just `source` when not found.
local function locate(source, name)
  local f = io.open(source, "r")
  if not f then return source end
  local n = 0
  local pat = "%f[%w_]" .. name:gsub("%p", "%%%0") .. "%s*="
  for line in f:lines() do
    n = n + 1
    if line:find(pat) then
      f:close()
      return source .. ":" .. n
    end
  end
  f:close()
  return source
end

-- Checks one jobDescription table and returns { [queue] = { [job] = {handler=, timeout=,
-- retries=, source=} } } or nil, message. `source` names where it came from (a file).
function _M.load_description(desc, source, into)
  source = source or "jobDescription"
  into = into or {}
  if type(desc) ~= "table" then
    return nil, fmt("%s: must return a jobDescription table like { QUEUENAME = { myJob = function(args, job) ... end } }, got %s",
      source, type(desc))
  end
  if next(desc) == nil then
    return nil, fmt("%s: the jobDescription table is empty: add a queue, e.g. { QUEUENAME = { myJob = function(args, job) ... end } }", source)
  end
  for queue, jobs in pairs(desc) do
    if type(queue) ~= "string" or queue == "" then
      return nil, fmt("%s: queue names must be non-empty strings, got %s", source, tostring(queue))
    end
    local qerr = naming.queue(queue)
    if qerr then return nil, fmt("%s: the queue name %s (rename the queue's table)", locate(source, queue), qerr) end
    if type(jobs) ~= "table" then
      return nil, fmt("%s: queue %s must be a table of jobs like { myJob = function(args, job) ... end }, got %s",
        locate(source, queue), queue, type(jobs))
    end
    if next(jobs) == nil then
      return nil, fmt("%s: queue %s has no jobs: add one, e.g. %s = { myJob = function(args, job) ... end }",
        locate(source, queue), queue, queue)
    end
    local q = into[queue] or {}
    into[queue] = q
    for name, def in pairs(jobs) do
      if type(name) ~= "string" then
        return nil, fmt("%s: job names in queue %s must be strings, got %s", source, queue, type(name))
      end
      local jerr = naming.job(name)
      if jerr then return nil, fmt("%s: the job name %s in queue %s (rename it)", locate(source, name), jerr, queue) end
      local spec
      if type(def) == "function" then
        spec = { handler = def }
      elseif type(def) == "table" then
        for k, v in pairs(def) do
          local want = JOB_FIELDS[k]
          if not want then
            return nil, fmt("%s: %s.%s has unknown field '%s' (known: handler, timeout, retries, cron)",
              locate(source, name), queue, name, tostring(k))
          end
          if want ~= "cron" and type(v) ~= want then
            return nil, fmt("%s: %s.%s.%s must be a %s, got %s", locate(source, name), queue, name, k, want, type(v))
          end
        end
        -- read once, through any metatable (a table of defaults may supply fields), and check
        -- what was read: what pairs saw above is only the table's own fields
        local handler, timeout, retries, src = def.handler, def.timeout, def.retries, def.source
        local read = { timeout = timeout, retries = retries, source = src }
        for _, k in ipairs({ "timeout", "retries", "source" }) do
          local v = read[k]
          if v ~= nil and type(v) ~= JOB_FIELDS[k] then
            return nil, fmt("%s: %s.%s.%s must be a %s, got %s", locate(source, name), queue, name, k, JOB_FIELDS[k], type(v))
          end
        end
        if type(handler) ~= "function" then
          return nil, fmt("%s: %s.%s.handler must be a function, got %s", locate(source, name), queue, name, type(handler))
        end
        if timeout and not (timeout > 0 and timeout <= 3.2e7) then
          return nil, fmt("%s: %s.%s.timeout must be seconds > 0 (at most 3.2e7), got %s", locate(source, name), queue, name, timeout)
        end
        if retries and not (retries >= 0 and retries <= 1000 and retries == floor(retries)) then
          return nil, fmt("%s: %s.%s.retries must be a whole number from 0 to 1000, got %s", locate(source, name), queue, name, retries)
        end
        local cron
        local cdef = def.cron
        if cdef ~= nil then
          local cerr
          cron, cerr = check_cron(cdef, queue .. "." .. name)
          if not cron then return nil, fmt("%s: %s", locate(source, name), cerr) end
        end
        spec = { handler = handler, timeout = timeout, retries = retries, source = src, cron = cron }
      else
        return nil, fmt("%s: %s.%s must be a function(args, job) or a table { handler = function(args, job) ... end }, got %s",
          locate(source, name), queue, name, type(def))
      end
      if not spec.source then
        local info = debug.getinfo(spec.handler, "S")
        spec.source = info and info.short_src and (info.short_src .. ":" .. tostring(info.linedefined)) or source
      end
      if q[name] then
        return nil, fmt("%s: %s.%s is defined twice (also at %s): rename one of them", source, queue, name, q[name].source)
      end
      q[name] = spec
    end
  end
  return into
end

return _M
