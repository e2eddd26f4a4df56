-- jobrt.names: the alphabet and lengths of queue names, job names and job ids
-- (lua-server-scripts/README.md, "Names"; the server scripts check the same rules).
--
--   local names = require 'jobrt.names'
--   names.queue(v) -> nil | message     1-128 bytes of A-Z a-z 0-9 _ . : -
--   names.job(v)   -> nil | message     1-256 bytes, no control characters, no '{' or '}'
--   names.id(v)    -> nil | message     an id a client gives a new job: 1-256 bytes, no control
--                                       characters, no '{' or '}', not all digits (those are the
--                                       generated ids)
--   names.ref(v)   -> nil | message     an id that names an existing job (generated ones too)
--   names.utf8(v)  -> nil | message     v is valid UTF-8 (a jobHash: any other text is allowed)
--   names.MAX_QUEUE, names.MAX_JOB, names.MAX_ID
-- Job names, ids, jobHashes and cron names must be valid UTF-8 (queue names are ASCII): they
-- travel in JSON (the API, --json, job.children), where an invalid byte would come back as
-- U+FFFD and no longer name the job. The message gives the byte offset (from 0, as for args).
-- Each returns nil when v is acceptable, else a sentence naming what is wrong and the fix,
-- starting with the rule ("must be ..."), for callers to prefix with what they checked.
--
-- Why: every key of a queue is "jobrt:{QUEUE}:<suffix>" and a job record "jobrt:{QUEUE}:job:<id>".
-- A queue name with '{' or '}' could make one queue's key another queue's (job id "x}:wait" of
-- queue "a" and the wait list of queue "a}:job:x" would be the same key) and moves the Redis
-- Cluster hash tag; a newline in an id breaks the results channel (one record key per line);
-- control characters make logs and the CLI lie. Queue names also appear in URL paths
-- (jobrt web) and shell commands, hence their short alphabet.
local type, tostring = type, tostring
local utf8 = require('jobrt.json').utf8
local fmt = string.format

local _M = { MAX_QUEUE = 128, MAX_JOB = 256, MAX_ID = 256 }

-- v quoted for a message: 'like this', or "with\tescapes" when it holds control characters
-- (bytes that are not UTF-8 as \NNN)
local function shown(v)
  v = tostring(v)
  local valid = utf8(v)
  if #v > 40 then v = v:sub(1, 37) .. '...' end
  if not valid then
    return '"' .. v:gsub('[%c\128-\255]', function(b) return '\\' .. b:byte() end) .. '"'
  end
  if v:find('%c') then return (fmt('%q', v):gsub('\\\n', '\\n')) end
  return "'" .. v .. "'"
end

function _M.utf8(v)
  local ok, at = utf8(v)
  if ok then return nil end
  return fmt('must be UTF-8: byte offset %d is 0x%02x (got %s)', at, v:byte(at + 1), shown(v))
end

function _M.queue(v)
  if type(v) ~= 'string' then return 'must be a string, got ' .. type(v) end
  if v == '' then return "must not be empty (1-128 characters of A-Z a-z 0-9 _ . : -)" end
  if #v > _M.MAX_QUEUE then return fmt('must be at most %d bytes, got %d', _M.MAX_QUEUE, #v) end
  local bad = v:find('[^%w_.:%-]')
  if bad then
    return fmt('may use only A-Z a-z 0-9 _ . : - (got %s, with %s at byte %d)', shown(v), shown(v:sub(bad, bad)), bad)
  end
  return nil
end

local function text(v, max, what)
  if type(v) ~= 'string' then return 'must be a string, got ' .. type(v) end
  if v == '' then return 'must not be empty' end
  if #v > max then return fmt('must be at most %d bytes, got %d', max, #v) end
  local bad = v:find('[%c{}]')
  if bad then
    return fmt("must not contain control characters (newline, tab...) or '{' '}' (got %s, with %s at byte %d)%s",
      shown(v), shown(v:sub(bad, bad)), bad, what or '')
  end
  return _M.utf8(v)
end

function _M.job(v) return text(v, _M.MAX_JOB) end

function _M.ref(v) return text(v, _M.MAX_ID) end

function _M.id(v)
  local err = text(v, _M.MAX_ID)
  if err then return err end
  if v:find('^%d+$') then
    return fmt("must not be all digits (generated ids are), got %s: add a prefix, e.g. 'job-%s'", shown(v), v:sub(1, 40))
  end
  return nil
end

return _M
