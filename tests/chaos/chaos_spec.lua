-- The 60 s variant of `make chaos` inside `make test`, so CI guards the soak (issue 8). It runs
-- tests/chaos/run.lua in a child process (its own redis-servers and workers) with
-- CHAOS_SECONDS=60 and appendfsync always, and checks the counts of its CHAOS-RESULT line.
--
-- It takes about 75 s; JOBRT_CHAOS_IN_TEST=0 leaves it out (e.g. while iterating on other
-- specs). CHAOS_SEED replays a seed (the seed is in the output).
local cjson = require 'cjson'
local jobrt = require 'jobrt'
local h = require 'tests.helpers'

local ENABLED = os.getenv('JOBRT_CHAOS_IN_TEST') ~= '0'

describe("make chaos (60 s, appendfsync always)", function()
  if not ENABLED then
    pending("the 60 s chaos soak is left out: JOBRT_CHAOS_IN_TEST=0")
    return
  end

  it("loses nothing, explains every duplicate, never runs identical jobs at once", function()
    local p = h.spawn_jobrt({ 'run', 'tests/chaos/run.lua' },
      { env = { CHAOS_SECONDS = '60', CHAOS_FSYNC = 'always', CHAOS_SEED = os.getenv('CHAOS_SEED') or false } })
    -- past 8 minutes: SIGTERM, so that the soak stops its servers and workers itself
    local guard = jobrt.timer()
    guard:start(480, function() p:kill('SIGTERM') end)
    local code = p:wait()
    guard:close()
    local out, err = p:output()
    local all = out .. err
    local json = out:match('CHAOS%-RESULT (%b{})')
    assert(json, 'the soak printed no CHAOS-RESULT line (exit ' .. tostring(code) .. '):\n' .. all)
    local r = cjson.decode(json)
    -- every count that must be 0, and the report for when one is not
    local bad = {}
    for _, k in ipairs({ 'lost', 'failed_unexpectedly', 'record_mismatch', 'duplicates_unexplained',
                         'same_attempt', 'overlaps_held', 'overlaps_accepted', 'overlaps_kept_running',
                         'overlaps_fenced_unexplained', 'early_starts', 'crosstalk', 'stuck', 'keys_bad',
                         'process_trouble', 'violations' }) do
      if r[k] ~= 0 then bad[#bad + 1] = k .. '=' .. tostring(r[k]) end
    end
    assert(#bad == 0, 'chaos violations (' .. table.concat(bad, ', ') .. '):\n' .. all)
    -- the soak did something: jobs of every kind ended, every fault kind was injected
    assert(r.jobs > 300 and r.completed > 200 and r.failed_intended > 5, 'too little work:\n' .. all)
    for _, kind in ipairs({ 'kill9-worker', 'kill9-child', 'sigstop-worker', 'sigterm-worker',
                            'redis-restart', 'redis-sigstop' }) do
      assert((r.faults or {})[kind], 'fault ' .. kind .. ' was never injected:\n' .. all)
    end
    assert.are.equal(0, code, all)
    assert.is_true(r.pass)
  end)
end)
