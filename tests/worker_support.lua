-- tests/worker_support.lua: what the worker specs share — job files in a fresh directory,
-- `jobrt work` processes that are known to be serving, enqueueing through jobrt.ops, and a
-- ledger that handlers append to (through job.redis) so a spec can see who ran what, when.
--
--   local ws = require 'tests.worker_support'
--   ws.jobs_dir{ ["name.lua"] = source, ... } -> dir
--   ws.start_worker(dir, extra_args, url, nworkers) -> process (once registered)
--   ws.stop_worker(p) -> exit code, stdout, stderr   (SIGTERM, then wait)
--   ws.enqueue(o, queue, job, args_table, opts) -> id
--   ws.state_of(o, queue, id) -> state, record
--   ws.REPORT: Lua text for job files: note(job, what) appends {id, what, t, w, a} to test:log
--   ws.injector() -> inject(name, wrap, w), restore(): fault injection into an in-process
--       worker w: wraps operation `name` of jobrt.ops for w's ops object only (calls still go to
--       the real Redis): wrap(real, self, ...) decides what the worker sees
local cjson = require 'cjson'
local h = require 'tests.helpers'

local ws = {}

function ws.jobs_dir(files)
  local dir = h.tmpdir()
  for name, src in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(src)
    f:close()
  end
  return dir
end

function ws.start_worker(dir, extra, url, nworkers)
  local r = h.redis(url)
  local before = r:call("ZCARD", "jobrt:{workers}")
  local a = { "work", dir, "--redis", url or h.url }
  for _, x in ipairs(extra or {}) do a[#a + 1] = x end
  local p = h.spawn_jobrt(a)
  h.wait_for(function()
    if p:exited() then
      local out, err = p:output()
      error("worker exited early: " .. out .. err)
    end
    return r:call("ZCARD", "jobrt:{workers}") >= before + (nworkers or 1)
  end, 10, "the worker to register")
  r:close()
  return p
end

function ws.stop_worker(p)
  if not p:exited() then p:kill("SIGTERM") end
  local code = p:wait()
  return code, p:output()
end

function ws.enqueue(o, q, fn, args, opts)
  local id, err = o:enqueue(q, fn, cjson.encode(args or {}), opts or {})
  assert(id, err)
  return id
end

function ws.state_of(o, q, id)
  local rec = o:get(q, id)
  return rec and rec.state, rec
end

ws.REPORT = [[
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local function note(job, what)
  job.redis:call("RPUSH", "test:log", cjson.encode({ id = job.id, what = what, t = jobrt.now(), w = job.worker, a = job.attempt }))
end
]]

function ws.injector()
  local ops_mod = require 'jobrt.ops'
  local saved = {}
  local function inject(name, wrap, w)
    saved[name] = saved[name] or ops_mod[name]
    local real = saved[name]
    ops_mod[name] = function(self, ...)
      if w and self == w.ops then return wrap(real, self, ...) end
      return real(self, ...)
    end
  end
  local function restore()
    for name, f in pairs(saved) do ops_mod[name] = f end
    saved = {}
  end
  return inject, restore
end

return ws
