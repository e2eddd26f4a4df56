-- jobrt.supervisor: `jobrt work PATHS --procs N`: N worker child processes, kept running, and
-- replaced one at a time when the job files are reloaded.
--
--   supervisor.run(opts, paths, child_opts, hooks) -> exit status (0 after a graceful stop)
--       opts: the parsed options of `jobrt work` (procs, watchdog, grace, watch are used);
--       paths: the job file paths as given; child_opts: the options passed on to every child
--       ("--name=value" strings); hooks.check(desc, info) -> true | nil, message: the checks a
--       reloaded set of job files must pass before any child is replaced (queue types);
--       hooks.queues: the queue names served at start (for the reload's summary);
--       hooks.seen: jobrt.watcher.sources(paths) from just before the files were loaded.
--
-- Children run `jobrt work PATHS... OPTS --child`, detached (a Ctrl-C at the terminal reaches
-- the supervisor only, which stops them gracefully), with a heartbeat pipe: a child beats once
-- its worker serves, and then every 0.5 s from its loop. A child that exits is restarted (at
-- most once a second when it dies at once again and again); one whose loop stops ticking for
-- --watchdog seconds (a handler that never yields) is killed and restarted. Its jobs come back
-- through their leases.
--
-- Reload (SIGHUP; with --watch also a change under the paths, see jobrt.hotreload): the
-- supervisor loads the job files itself and runs hooks.check; a failure is logged (file:line
-- first) and changes nothing. Then, slot by slot, it starts the new child, waits until that
-- one serves (its first heartbeat), and only then sends the old child SIGTERM: the old child
-- reserves nothing more and finishes its jobs in flight on the code they started with (within
-- --grace, then hands back the rest), while the new one already serves. So at every moment at
-- least N children serve, and serving never stops. A new child that exits before it serves
-- (or does not serve within START_TIMEOUT seconds) ends the round: the children not yet
-- replaced keep serving, and the error is logged. A reload asked for during a round runs after
-- it. On SIGTERM/SIGINT every child, old and new, is stopped gracefully; a second signal kills
-- them all at once.
local jobrt = require 'jobrt'
local proc = require 'jobrt.core.proc'
local hotreload = require 'jobrt.hotreload'

local pairs, ipairs, next, tostring = pairs, ipairs, next, tostring
local fmt, concat, sort = string.format, table.concat, table.sort
local monotime = jobrt.monotime

local _M = { START_TIMEOUT = 60 }

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  sort(out)
  return out
end

function _M.run(opts, paths, child_opts, hooks)
  hooks = hooks or {}
  local n = opts.procs
  local watchdog = opts.watchdog or 10
  local exe = proc.exepath() or arg[0]
  local children = {}          -- slot -> the child serving it: { p, slot, gen, started, role }
  local others = {}            -- p -> a child being started for a reload, or an old one draining
  local stopping = false
  local gen = 1                -- generation of the job files; children carry the one they loaded
  local all_done = jobrt.cond()
  local queues = hooks.queues or {}

  local function alive()
    return next(children) ~= nil or next(others) ~= nil
  end

  local function spawn_child()
    local a = { exe, "work" }
    for _, p in ipairs(paths) do a[#a + 1] = p end
    for _, o in ipairs(child_opts) do a[#a + 1] = o end
    a[#a + 1] = "--child"
    return proc.spawn{ file = exe, args = a, heartbeat = true, detached = true }
  end

  local start_child

  -- Waits for e's process to exit, then restarts its slot if it was serving.
  local function watch_exit(e)
    jobrt.spawn(function()
      local p = e.p
      local code, sig = p:wait()
      e.exited = true
      local how = sig and ("was killed by signal " .. sig) or ("exited with status " .. code)
      if e.role == "serving" then
        if children[e.slot] == e then children[e.slot] = nil end
        if not stopping then
          jobrt.log("warn", "worker child %d (pid %d) %s; restarting it", e.slot, p:pid(), how)
          -- a child that dies at once again and again is restarted at most once a second
          if monotime() - e.started < 1 then jobrt.sleep(1) end
          if not stopping and not children[e.slot] then start_child(e.slot) end
        end
      else
        others[p] = nil
        if e.role == "draining" then
          jobrt.log("info", "previous worker child %d (pid %d) has finished its jobs in flight and %s",
            e.slot, p:pid(), how)
        end
      end
      if e.changed then e.changed:broadcast() end
      if stopping and not alive() then all_done:broadcast() end
    end)
  end

  function start_child(slot)
    local p, err = spawn_child()
    if not p then
      jobrt.log("error", "cannot start worker child %d: %s (trying again in 1s)", slot, err)
      jobrt.spawn(function()
        jobrt.sleep(1)
        if not stopping and not children[slot] then start_child(slot) end
      end)
      return nil
    end
    local e = { p = p, slot = slot, gen = gen, started = monotime(), role = "serving" }
    children[slot] = e
    jobrt.log("info", "worker child %d started (pid %d)", slot, p:pid())
    watch_exit(e)
    return p
  end

  -- One reload round: replaces, slot by slot, each child older than generation `target`.
  local function replace_all(target)
    local replaced = 0
    for slot = 1, n do
      if stopping then return nil, "stopping" end
      local cur = children[slot]
      -- a slot without a child is being restarted: the restart loads the files as they are now
      if cur and cur.gen < target then
        local p, err = spawn_child()
        if not p then return nil, fmt("cannot start a new worker child for slot %d: %s", slot, tostring(err)) end
        local e = { p = p, slot = slot, gen = target, started = monotime(), role = "starting",
                    changed = jobrt.cond() }
        others[p] = e
        watch_exit(e)
        local deadline = monotime() + _M.START_TIMEOUT
        -- its first heartbeat says it serves (sent once its worker started); or it exits
        while p:beats() == 0 and not e.exited and not stopping and monotime() < deadline do
          e.changed:wait(0.02)
        end
        if e.exited then
          local _, status, sig = p:exited()
          return nil, fmt("the new worker child for slot %d (pid %d) %s before it served (see its log above); the previous children keep serving",
            slot, p:pid(), sig ~= 0 and ("was killed by signal " .. sig) or ("exited with status " .. status))
        end
        if stopping then return nil, "stopping" end
        if p:beats() == 0 then
          e.killed = true
          p:kill("SIGKILL")
          return nil, fmt("the new worker child for slot %d (pid %d) did not serve within %ds; killed it, the previous children keep serving",
            slot, p:pid(), _M.START_TIMEOUT)
        end
        others[p] = nil
        e.role = "serving"
        e.changed = nil
        cur = children[slot]           -- may have been restarted meanwhile
        children[slot] = e
        if cur then
          cur.role = "draining"
          others[cur.p] = cur
          cur.p:kill("SIGTERM")        -- reserves nothing more, finishes its jobs in flight
          jobrt.log("info", "worker child %d replaced: pid %d serves the new job definitions; pid %d finishes its jobs in flight, then exits",
            slot, p:pid(), cur.p:pid())
        end
        replaced = replaced + 1
      end
    end
    return replaced
  end

  local function reload()
    local desc, err, info = hotreload.load(paths)
    if not desc then return nil, err end
    if hooks.check then
      local ok, cerr = hooks.check(desc, info)
      if not ok then
        info.restore()
        return nil, cerr
      end
    end
    gen = gen + 1
    local replaced, rerr = replace_all(gen)
    if not replaced then return nil, rerr end
    local now, old = {}, {}
    for _, q in ipairs(queues) do old[q] = true end
    for q in pairs(desc) do now[q] = true end
    local res = { queues = sorted_keys(now), added = {}, removed = {} }
    for _, q in ipairs(res.queues) do if not old[q] then res.added[#res.added + 1] = q end end
    for _, q in ipairs(queues) do if not now[q] then res.removed[#res.removed + 1] = q end end
    queues = res.queues
    return true, fmt("%d worker child(ren) replaced one at a time; %s", replaced, hotreload.summary(res))
  end

  for i = 1, n do start_child(i) end

  local reloader, rerr = hotreload.start{ paths = paths, watch = opts.watch, reload = reload, seen = hooks.seen }
  if not reloader then
    jobrt.log("error", "cannot watch the job files: %s (serving without --watch; SIGHUP reloads)", tostring(rerr))
    reloader = hotreload.start{ paths = paths, watch = false, reload = reload }
  end

  -- Watchdog: a child whose loop stopped ticking (e.g. a handler spinning in pure Lua).
  local dog = jobrt.timer()
  dog:start(0.5, function()
    local function check(e)
      local age = e.p:beat_age()
      if not e.killed and not e.exited and age > watchdog then
        e.killed = true
        jobrt.log("error", "worker child %d (pid %d) has not ticked for %.1fs (a handler that never yields?); killing it",
          e.slot, e.p:pid(), age)
        e.p:kill("SIGKILL")
      end
    end
    for _, e in pairs(children) do check(e) end
    for _, e in pairs(others) do check(e) end
  end, 0.5)

  local done = jobrt.cond()
  local signals = 0
  local function on_sig(name)
    signals = signals + 1
    if signals > 1 then
      for _, e in pairs(children) do e.p:kill("SIGKILL") end
      for _, e in pairs(others) do e.p:kill("SIGKILL") end
      jobrt.exit(1)
      return
    end
    stopping = true
    local count = 0
    for _, e in pairs(children) do count = count + 1; e.p:kill("SIGTERM") end
    for _, e in pairs(others) do
      count = count + 1
      if e.role == "starting" then e.p:kill("SIGTERM") end   -- draining ones have theirs
      if e.changed then e.changed:broadcast() end
    end
    jobrt.log("info", "%s: stopping %d worker children gracefully", name, count)
    done:broadcast()
  end
  local h1 = jobrt.on_signal("SIGTERM", on_sig)
  local h2 = jobrt.on_signal("SIGINT", on_sig)
  while not stopping do done:wait() end
  reloader:close()
  -- the watchdog stays on (a stuck child cannot act on SIGTERM), and a child still running
  -- after its grace time and the hand-back is killed: its jobs come back by lease expiry
  local deadline = monotime() + (opts.grace or 30) + 5
  while alive() do
    all_done:wait(1)
    if alive() and monotime() > deadline then
      local function kill(e)
        if not e.killed then
          e.killed = true
          jobrt.log("error", "worker child %d (pid %d) did not stop within its grace time; killing it", e.slot, e.p:pid())
          e.p:kill("SIGKILL")
        end
      end
      for _, e in pairs(children) do kill(e) end
      for _, e in pairs(others) do kill(e) end
    end
  end
  dog:close()
  h1:close()
  h2:close()
  jobrt.log("info", "all worker children stopped")
  return 0
end

return _M
