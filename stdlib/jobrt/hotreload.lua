-- jobrt.hotreload: when `jobrt work` reloads its job files, and one reload at a time.
--
-- Two triggers: SIGHUP (always), and with --watch a change of a Lua source under the served
-- paths (jobrt.watcher: every directory watched, bursts coalesced, unchanged sources ignored).
-- Each trigger calls the `reload` function given (the single worker process swaps its
-- definitions in place, jobrt.worker W:reload; the --procs supervisor replaces its children
-- one at a time, jobrt.supervisor). Reloads never overlap: a trigger that arrives while one
-- runs makes exactly one more run after it, which sees the files as they are then.
--
--   hotreload.start{ paths =, watch = bool, reload = fn[, settle = s][, seen = sources] }
--       -> h | nil, message
--       reload(why) -> true, summary | nil, message   (runs in a coroutine; may yield)
--           why: "SIGHUP", or what changed ("jobs/mail.lua changed")
--       seen: watcher.sources(paths) taken just before the files were loaded; a change made
--           between that and the watches being in place triggers a reload at once.
--       Logs "reloading job files (WHY)" and then "reloaded job files: SUMMARY" (info) or
--       "reload failed, still serving the previous job definitions: MESSAGE" (error; the
--       message starts with file:line when a file is at fault). A reload that failed because
--       Redis did not answer (a message "ECONN: ...", "ETIMEDOUT: ...", "LOADING ...") is tried
--       again every RETRY seconds (2) until it gets an answer.
--       Errors: the watcher's (a path that cannot be watched).
--   h:trigger(why[, on_change])   a reload, as if SIGHUP came (on_change: as if the watcher
--                    saw a change: skipped when the files are back as the serving
--                    definitions were loaded from them, e.g. a broken edit undone)
--   h:close()        stops watching and handling SIGHUP; a reload under way finishes
--   hotreload.load(paths) -> desc, nil, info | nil, message
--       jobrt.jobfiles.reload: the job files loaded afresh (helpers in lib/ included); on
--       failure everything loaded before stays as it was.
--   hotreload.summary(res) -> text   for W:reload's result ({ added, removed, queues })
local jobrt = require 'jobrt'
local watcher = require 'jobrt.watcher'
local jobfiles = require 'jobrt.jobfiles'

local setmetatable, tostring = setmetatable, tostring
local fmt, concat = string.format, table.concat

local _M = { RETRY = 2 }
local H = {}
H.__index = H

_M.load = jobfiles.reload

function _M.summary(res)
  local parts = { 'serving ' .. (#res.queues > 0 and concat(res.queues, ', ') or 'no queue') }
  if #res.added > 0 then parts[#parts + 1] = 'new: ' .. concat(res.added, ', ') end
  if #res.removed > 0 then
    parts[#parts + 1] = 'no longer served: ' .. concat(res.removed, ', ') .. ' (their jobs in flight finish first)'
  end
  return concat(parts, '; ')
end

-- A load error's message for the log: the message, and of its traceback only the frames in
-- the user's files (those of jobrt's own modules and of C say nothing about the fix).
local function readable(msg)
  local head, tb = msg:match('^(.-)\nstack traceback:\n(.*)$')
  if not head then return msg end
  local frames = {}
  for line in tb:gmatch('[^\n]+') do
    local l = line:gsub('^%s+', '')
    if not l:match('^%[C%]') and not l:match('^stdlib/') then frames[#frames + 1] = '\t' .. l end
  end
  if #frames == 0 then return head end
  return head .. '\n' .. concat(frames, '\n')
end

-- "a.lua changed", "a.lua, b.lua changed", "a.lua, b.lua, c.lua and 4 more changed"
local function changed(names)
  if #names == 0 then return 'a file changed' end
  local shown = {}
  for i = 1, #names < 3 and #names or 3 do shown[i] = names[i] end
  local more = #names > 3 and fmt(' and %d more', #names - 3) or ''
  return concat(shown, ', ') .. more .. ' changed'
end

function _M.start(o)
  local self = setmetatable({ reload = o.reload, paths = o.paths, running = false, again = nil,
                              closed = false, served = o.seen, retry = jobrt.timer() }, H)
  if o.watch then
    local w, err = watcher.new(o.paths, function(names) self:trigger(changed(names), true) end,
      { settle = o.settle, seen = o.seen })
    if not w then
      self.retry:close()
      return nil, err
    end
    self.watcher = w
  end
  self.sighup = jobrt.on_signal('SIGHUP', function(name) self:trigger(name) end)
  return self
end

-- why: the reason logged; on_change: a watched change (skipped when the sources are back as
-- the serving definitions were loaded from them, e.g. a broken edit undone).
function H:trigger(why, on_change)
  if self.closed then return end
  if self.running then
    -- one more run after this one (the latest reason; a signal's run is never skipped)
    if not self.again or not on_change then self.again = { why = why, on_change = on_change } end
    return
  end
  self.running = true
  self.retry:stop()                   -- this run sees the files as they are now
  local t = { why = why, on_change = on_change }
  while t and not self.closed do
    local sources = self.watcher and watcher.sources(self.paths)
    if t.on_change and self.served and watcher.same(sources, self.served) then
      jobrt.log('info', 'job files back as the served definitions were loaded from them (%s): nothing to reload', t.why)
    else
      jobrt.log('info', 'reloading job files (%s)', t.why)
      local ok, res = self.reload(t.why)
      if ok then
        self.served = sources
        jobrt.log('info', 'reloaded job files: %s', tostring(res))
      else
        local msg = readable(tostring(res))
        if msg:match('^E%u+: ') or msg:match('^LOADING') then
          -- Redis did not answer (the checks need it): the same reload again in a while
          jobrt.log('error', 'reload failed, still serving the previous job definitions: %s (trying again in %gs)',
            msg, _M.RETRY)
          local again = 'trying again: ' .. t.why:gsub('^trying again: ', '')
          self.retry:start(_M.RETRY, function() self:trigger(again) end)
        else
          jobrt.log('error', 'reload failed, still serving the previous job definitions: %s', msg)
        end
      end
    end
    t, self.again = self.again, nil
  end
  self.running = false
end

function H:close()
  if self.closed then return end
  self.closed = true
  if self.watcher then self.watcher:close() end
  self.sighup:close()
  self.retry:close()
end

return _M
