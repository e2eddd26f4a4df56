-- jobrt.queuetypes: a queue's type declared where its jobs are, and the check that every
-- served queue has one.
--
-- A jobDescription may give a queue's type with the reserved key `_type`:
--     return { MAIL = { _type = "DELQUEUE", welcome = function(args, job) ... end } }
-- Keys starting with "_" are settings of the queue, never jobs: job names starting with "_"
-- are refused by the client and the command line (jobrt.client), so `_type` cannot clash with
-- a job, and a misspelt setting (`_tpye`) is an error rather than a job or silence. Lua itself
-- reserves names starting with "_" for such purposes (_G, _VERSION).
--
-- When the worker starts, a declared type is stored in RESERVED:QCONFIG if the queue has none
-- (HSETNX: two workers starting at once cannot both write); a stored type that differs is
-- refused, naming both, because changing the type of a queue that holds jobs strands them
-- (`jobrt queue-type QUEUE TYPE` is the deliberate way).
--
--   queuetypes.RESERVED = { _type = true }
--   queuetypes.extract(desc, source, types) -> desc_without_settings | nil, message
--       desc: a jobDescription (anything else is returned as is: the loader reports it);
--       source: where it came from, a file name (messages point at file:line), or nil;
--       types: the table to record declarations in, { [queue] = { type =, source = } },
--       shared across the files of one worker (two files declaring different types for one
--       queue is an error naming both).
--   queuetypes.apply(r, types) -> true | nil, message
--       r: a jobrt.redis connection (call from a coroutine). Stores each declared type that
--       is missing (logs it at info) and refuses a conflicting one. Redis errors come back
--       as nil, "ECONN: ..." etc.
--   queuetypes.restore(r, types) -> true | nil, message
--       The worker's heartbeat: stores again each declared type that has gone missing (a Redis
--       restarted without its data), with HSETNX only (one command per queue); logs what it
--       restored. A type changed meanwhile is left alone.
--   queuetypes.check(r, queues) -> true | nil, message
--       queues: a list or set of queue names. Every one must have a known type in
--       RESERVED:QCONFIG; the message names each missing one and both fixes.
local jobrt = require 'jobrt'

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local fmt, concat, sort = string.format, table.concat, table.sort

local _M = {}

local QCONFIG = 'RESERVED:QCONFIG'
local TYPES = { QUEUE = true, LBQUEUE = true, DELQUEUE = true }
_M.RESERVED = { _type = true }
_M.TYPES = TYPES

-- "file:line" of the setting that matches pattern inside queue's table: the first matching line
-- at or after the line that opens the table (`QUEUE = {`, `["QUEUE"] = {`); just the file when
-- that line is not found (every queue of a file has its own _type: the first _type of the
-- file would point at another queue's).
local function locate(source, queue, pattern)
  local f = source and io.open(source, 'r')
  if not f then return source or 'jobDescription' end
  local q = tostring(queue):gsub('%p', '%%%0')
  local opens = { '%f[%w_]' .. q .. '%s*=', '%[%s*["\']' .. q .. '["\']%s*%]%s*=' }
  local n, inside = 0, false
  for line in f:lines() do
    n = n + 1
    if not inside and (line:find(opens[1]) or line:find(opens[2])) then
      inside = true
      line = line:gsub('^.-' .. q .. '[^=]*=', '', 1)   -- `BOOK = { _type = ...` on one line
    end
    if inside and line:find(pattern) then
      f:close()
      return source .. ':' .. n
    end
  end
  f:close()
  return source
end

local function quoted(v)
  return type(v) == 'string' and ("'" .. v .. "'") or tostring(v)
end

-- Checks the settings of one queue's table; returns the declared type (or nil) or nil, err.
local function settings_of(queue, jobs, source)
  local declared
  for k, v in pairs(jobs) do
    if type(k) == 'string' and k:sub(1, 1) == '_' then
      local where = locate(source, queue, '%f[%w_]' .. k:gsub('%p', '%%%0') .. '%s*=')
      if not _M.RESERVED[k] then
        return nil, fmt("%s: %s.%s: keys starting with '_' are settings of the queue, not jobs, and '%s' is not one (known: _type)",
          where, queue, k, k)
      end
      if type(v) ~= 'string' or not TYPES[v] then
        local hint = type(v) == 'string' and TYPES[v:upper()] and fmt(" (write it in capitals: '%s')", v:upper()) or ''
        return nil, fmt("%s: %s._type must be 'QUEUE', 'LBQUEUE' or 'DELQUEUE', got %s%s",
          where, queue, quoted(v), hint)
      end
      declared = { type = v, source = where }
    elseif k == 'type' and type(v) == 'string' and TYPES[v:upper()] then
      -- `type = "LBQUEUE"` would be a job named type: say what was meant
      return nil, fmt("%s: %s.type = %s looks like the queue's type: write _type = '%s' (keys starting with '_' are settings; a job is a function)",
        locate(source, queue, '%f[%w_]type%s*='), queue, quoted(v), v:upper())
    end
  end
  return declared
end

function _M.extract(desc, source, types)
  if type(desc) ~= 'table' then return desc end
  types = types or {}
  local out
  for queue, jobs in pairs(desc) do
    if type(jobs) == 'table' then
      local declared, err = settings_of(queue, jobs, source)
      if err then return nil, err end
      if declared then
        local prev = types[queue]
        if prev and prev.type ~= declared.type then
          return nil, fmt("queue '%s' is declared %s in %s and %s in %s: declare one type (or declare it in one file only)",
            tostring(queue), prev.type, prev.source, declared.type, declared.source)
        end
        types[queue] = prev or declared
        -- a copy without the settings (the caller's table stays as it was)
        out = out or {}
        local copy = {}
        for k, v in pairs(jobs) do
          if not (type(k) == 'string' and k:sub(1, 1) == '_') then copy[k] = v end
        end
        out[queue] = copy
      end
    end
  end
  if not out then return desc end
  for queue, jobs in pairs(desc) do
    if out[queue] == nil then out[queue] = jobs end
  end
  return out
end

local function sorted_keys(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = k end
  sort(names)
  return names
end

function _M.apply(r, types)
  if types == nil or next(types) == nil then return true end
  for _, queue in ipairs(sorted_keys(types)) do
    local d = types[queue]
    local set, err = r:call('HSETNX', QCONFIG, queue, d.type)
    if set == nil then return nil, err end
    if set == 1 then
      jobrt.log('info', "queue %s: type %s stored in %s (declared by _type in %s)", queue, d.type, QCONFIG, d.source)
    else
      local cur, gerr = r:call('HGET', QCONFIG, queue)
      if cur == nil then return nil, gerr end
      if cur ~= d.type and cur ~= jobrt.null then
        return nil, fmt("queue '%s' is declared %s in %s but %s says %s: change _type in the file, or change the queue's type with  jobrt queue-type %s %s  (refused while the queue holds jobs, unless --force)",
          queue, d.type, d.source, QCONFIG, tostring(cur), queue, d.type)
      end
      if cur == jobrt.null then               -- deleted between the two calls: try once more
        local again, aerr = r:call('HSETNX', QCONFIG, queue, d.type)
        if again == nil then return nil, aerr end
      end
    end
  end
  return true
end

function _M.restore(r, types)
  if types == nil then return true end
  for queue, d in pairs(types) do
    local set, err = r:call('HSETNX', QCONFIG, queue, d.type)
    if set == nil then return nil, err end
    if set == 1 then
      jobrt.log('warn', "queue %s: its type was missing from %s (Redis lost its data?): stored %s again (declared by _type in %s)",
        queue, QCONFIG, d.type, d.source)
    end
  end
  return true
end

function _M.check(r, queues)
  local names = {}
  if queues[1] ~= nil then
    for i = 1, #queues do names[i] = queues[i] end
  else
    names = sorted_keys(queues)
  end
  sort(names)
  local lines = {}
  for _, q in ipairs(names) do
    local t, err = r:call('HGET', QCONFIG, q)
    if t == nil then return nil, err end
    if t == jobrt.null then
      lines[#lines + 1] = fmt("queue '%s' has no type in %s: declare it in its job file (%s = { _type = 'QUEUE', ... }) or set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
        q, QCONFIG, q, q)
    elseif not TYPES[t] then
      lines[#lines + 1] = fmt("queue '%s' has unknown type '%s' in %s: set it with  jobrt queue-type %s QUEUE|LBQUEUE|DELQUEUE",
        q, tostring(t), QCONFIG, q)
    end
  end
  if #lines > 0 then return nil, concat(lines, '\n') end
  return true
end

return _M
