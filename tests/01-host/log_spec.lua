-- Log lines (runtime/log.c, jobrt.log): an RFC 3339 timestamp with milliseconds on every line,
-- text or one JSON object per line (--log-format json, JOBRT_LOG_FORMAT=json), the worker's
-- per-job line with its fields, and buffering: one write(2) per loop turn, not one per line.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local cjson = require 'cjson'

local TS = '%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ'

local function lines(s)
  local t = {}
  for l in s:gmatch('[^\n]+') do t[#t + 1] = l end
  return t
end

-- every line of s decoded as JSON (fails naming the line that is not an object)
local function objects(s)
  local out = {}
  for i, l in ipairs(lines(s)) do
    local ok, v = pcall(cjson.decode, l)
    assert(ok and type(v) == 'table', ('line %d is not a JSON object: %s'):format(i, l))
    out[#out + 1] = v
  end
  return out
end

describe('log lines', function()
  it('start with an RFC 3339 UTC timestamp with milliseconds, the pid and the level', function()
    local code, _, err = h.run_jobrt({ '-e', 'local j = require "jobrt"; j.log("info", "hello %d", 42); j.log("warn", "careful")' })
    assert.equal(0, code)
    local l = lines(err)
    assert.equal(2, #l, err)
    assert.matches('^' .. TS .. ' jobrt%[%d+%] info: hello 42$', l[1])
    assert.matches('^' .. TS .. ' jobrt%[%d+%] warn: careful$', l[2])
    -- and the timestamp is now (UTC), to the millisecond
    local y, mo, d, hh, mi, ss, ms = l[1]:match('^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z')
    local t = os.time({ year = y, month = mo, day = d, hour = hh, min = mi, sec = ss, isdst = false })
    local utc_offset = os.time(os.date('!*t', 0)) - 0      -- os.time reads the table as local time
    local when = t - utc_offset + tonumber(ms) / 1000
    assert.is_true(math.abs(when - jobrt.now()) < 30, ('logged at %s, now is %.3f'):format(l[1], jobrt.now()))
  end)

  it('are JSON objects with --log-format json: ts, level, pid, msg, and fields in order', function()
    local code, _, err = h.run_jobrt({ '--log-format', 'json', '-e', [[
      local j = require 'jobrt'
      j.log('info', 'plain "quoted"\nsecond line\1')
      j.log_fields('warn', { 'queue', 'Q', 'ms', 2.5, 'attempt', 3, 'ok', true, 'bytes', '\255x' }, 'with %s', 'fields')
    ]] })
    assert.equal(0, code)
    local o = objects(err)
    assert.equal(2, #o, err)
    assert.matches('^' .. TS .. '$', o[1].ts)
    assert.same({ 'info', 'plain "quoted"\nsecond line\1' }, { o[1].level, o[1].msg })
    assert.is_number(o[1].pid)
    assert.same({ 'warn', 'with fields', 'Q', 2.5, 3, true, '\239\191\189x' },
      { o[2].level, o[2].msg, o[2].queue, o[2].ms, o[2].attempt, o[2].ok, o[2].bytes })
    assert.truthy(lines(err)[2]:find('"msg":"with fields","queue":"Q","ms":2.5,"attempt":3', 1, true), err)
  end)

  it('take the format from JOBRT_LOG_FORMAT, and a traceback stays inside its object', function()
    local code, _, err = h.run_jobrt({ '-e', 'error("kaput")' }, { env = { JOBRT_LOG_FORMAT = 'json' } })
    assert.equal(1, code)
    local o = objects(err)
    assert.equal(1, #o, err)
    assert.equal('error', o[1].level)
    assert.matches('^%(command line%):1: kaput\nstack traceback:', o[1].msg)
  end)

  it('refuse an unknown format with a usage error naming the choices', function()
    local code, _, err = h.run_jobrt({ '--log-format', 'xml', '-e', '' })
    assert.equal(2, code)
    assert.equal("jobrt: --log-format: unknown log format 'xml': use text or json\n", err)
    code, _, err = h.run_jobrt({ 'stats', '--log-format=yaml' })
    assert.equal(2, code)
    assert.equal("jobrt stats: --log-format: unknown log format 'yaml': use text or json\n", err)
    code, _, err = h.run_jobrt({ '-e', 'require("jobrt").log("info", "x")' }, { env = { JOBRT_LOG_FORMAT = 'xml' } })
    assert.equal(0, code)
    assert.matches("warn: JOBRT_LOG_FORMAT: unknown log format 'xml': use text or json %(using text%)\n", err)
  end)

  it('--log-format is a common option: every command takes it', function()
    for _, c in ipairs(require('jobrt.cli').commands()) do
      local code, out, err = h.run_jobrt({ c, '--log-format', 'json', '--help' })
      assert.equal(0, code, ('jobrt %s --log-format json --help: %s'):format(c, err))
      assert.matches('usage:', out)
    end
  end)

  it('are buffered: a thousand info lines of one loop turn take a handful of writes', function()
    -- /proc/self/io counts the write system calls of the process (syscw)
    local code, out, err = h.run_jobrt({ '-e', [[
      local j = require 'jobrt'
      local function syscw()
        local f = assert(io.open('/proc/self/io'))
        local t = f:read('*a')
        f:close()
        return tonumber(t:match('syscw: (%d+)'))
      end
      local a = syscw()
      for i = 1, 1000 do j.log('info', 'line %d of this turn', i) end
      j.sleep(0.001) j.sleep(0.001)          -- two loop turns later: written out
      print(syscw() - a)
    ]] })
    assert.equal(0, code, err)
    assert.equal(1000, #lines(err))
    local writes = tonumber(out)
    -- 1000 lines of ~65 bytes, written in pieces of whole lines of at most 4096 bytes
    assert.is_true(writes >= 1 and writes <= 25, ('%d writes for 1000 lines'):format(writes))
    for i, l in ipairs(lines(err)) do
      assert.matches('info: line ' .. i .. ' of this turn$', l)
    end
  end)

  it('keep their order when a warning is written at once after buffered lines', function()
    local code, _, err = h.run_jobrt({ '-e', [[
      local j = require 'jobrt'
      j.log('info', 'first'); j.log('debug', 'hidden'); j.log('warn', 'second'); j.log('info', 'third')
    ]] })
    assert.equal(0, code)
    local l = lines(err)
    assert.equal(3, #l, err)
    assert.matches('info: first$', l[1])
    assert.matches('warn: second$', l[2])
    assert.matches('info: third$', l[3])
  end)
end)

describe('the worker in JSON', function()
  it('logs one object per job with queue, job, id, attempt, ms, worker and the result', function()
    h.flush()
    local q = jobrt.connect(h.url)
    q:queueType('LOGQ', 'QUEUE')
    local dir = h.tmpdir()
    local f = assert(io.open(dir .. '/logq.lua', 'w'))
    f:write([[return { LOGQ = { ok = function() return 1 end, bad = function() error('nope', 0) end } }]])
    f:close()
    local p = h.spawn_jobrt({ 'work', dir, '--redis', h.url, '--log-format', 'json' })
    h.wait_for(function() return #q:workers() == 1 end, 10, 'the worker')
    local worker_id = q:workers()[1].id
    local id_ok = q:enqueueJob('LOGQ', 'ok', {})
    local id_bad = q:enqueueJob('LOGQ', 'bad', {})
    q:waitJob('LOGQ', id_ok, 5)
    pcall(q.waitJob, q, 'LOGQ', id_bad, 5)
    p:kill('SIGTERM')
    assert.equal(0, p:wait())
    q:close()
    os.execute("rm -rf '" .. dir .. "'")
    local _, err = p:output()
    local jobs = {}
    for _, o in ipairs(objects(err)) do
      assert.matches('^' .. TS .. '$', o.ts)
      if o.job then jobs[o.job] = o end
    end
    local ok, bad = jobs.ok, jobs.bad
    assert.truthy(ok, err)
    assert.same({ 'info', 'LOGQ', id_ok, 1, worker_id, 'ok' },
      { ok.level, ok.queue, ok.id, ok.attempt, ok.worker, ok.result })
    assert.is_number(ok.ms)
    assert.is_nil(ok.error)
    assert.same({ 'LOGQ', id_bad, 'failed', 'nope' }, { bad.queue, bad.id, bad.result, bad.error })
    assert.matches('^LOGQ%.bad id=' .. id_bad .. ' attempt=1 failed [%d.]+ms: nope$', bad.msg)
  end)
end)
