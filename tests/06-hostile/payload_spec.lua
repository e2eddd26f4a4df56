-- Job arguments and results end to end: numbers exact, [] kept, '/' unescaped, text given as
-- JSON stored as given, UTF-8 only, and a size limit (16 MiB unless configured) that fails the
-- job or refuses the call with its name, never crashes the worker.
local jobrt = require 'jobrt'
local json = require 'jobrt.json'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'

local BIG = 1796046695261234            -- lua-cjson 2.1.0 wrote 1.796046695261e+15

local JOBS = [[
local jobrt = require 'jobrt'
return { P = {
  echo = function(args) return args end,
  exact = function() return { n = 1796046695261234, p = 'a/b', e = jobrt.json.array(), f = 0.1 } end,
  child = function(args, job) return job:enqueue('P', 'echo', { n = 1796046695261234, l = jobrt.json.array() }) end,
  huge = function(args) return ('x'):rep(args.mb * 1024 * 1024) end,
  sized = function(args) return ('y'):rep(args.n) end,
  badtext = function() return { s = 'caf\233' } end,
  badreason = function() error('bad bytes \255 in the message') end,
} }
]]

local function start_worker(dir, extra)
  local r = h.redis()
  local a = { 'work', dir, '--redis', h.url, '--log-level', 'warn' }
  for _, x in ipairs(extra or {}) do a[#a + 1] = x end
  local p = h.spawn_jobrt(a)
  h.wait_for(function()
    if p:exited() then error('worker exited early: ' .. table.concat({ p:output() }, '')) end
    return #r:call('ZRANGE', 'jobrt:{workers}', 0, -1) >= 1
  end, 10, 'the worker to register')
  r:close()
  return p
end

local function stop_worker(p)
  if not p:exited() then p:kill('SIGTERM') end
  return p:wait()
end

describe('job payloads', function()
  local r, o, q, dir
  setup(function()
    dir = h.tmpdir()
    local f = assert(io.open(dir .. '/p.lua', 'w'))
    f:write(JOBS)
    f:close()
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    h.flush()
    r = h.redis()
    o = assert(ops_mod.new(r))
    assert(o:set_queue_type('P', 'QUEUE'))
    q = jobrt.connect(h.url)
  end)
  after_each(function()
    q:close()
    r:close()
  end)

  local function finished(id)
    local rec
    h.wait_for(function()
      rec = o:get('P', id)
      return rec and rec.state == 'finished'
    end, 20, 'job ' .. id)
    return rec
  end

  describe('numbers, arrays and text', function()
    local p
    before_each(function() p = start_worker(dir) end)
    after_each(function() stop_worker(p) end)

    it('a result keeps its numbers exact, [] as [] and / as /', function()
      local rec = finished(q:enqueueJob('P', 'exact', {}))
      assert.equal('successful', rec.result)
      local text = rec['result-value']
      assert.truthy(text:find('"n":1796046695261234', 1, true), text)
      assert.truthy(text:find('"p":"a/b"', 1, true), text)
      assert.truthy(text:find('"e":[]', 1, true), text)
      assert.truthy(text:find('"f":0.1', 1, true), text)
      assert.equal(BIG, cjson.decode(text).n)
    end)

    it('args from the Lua client are exact, with sorted keys, and come back the same from the worker', function()
      local id = q:enqueueJob('P', 'echo', { p = 'a/b', n = BIG, l = json.array(), f = 0.1 })
      assert.equal('{"f":0.1,"l":[],"n":1796046695261234,"p":"a/b"}', o:get('P', id).args)
      local back = json.decode(finished(id)['result-value'])
      assert.equal(BIG, back.n)
      assert.equal('[]', json.encode(back.l))
    end)

    it('job:enqueue in a handler writes exact args', function()
      local child = json.decode(finished(q:enqueueJob('P', 'child', {}))['result-value'])
      assert.equal('{"l":[],"n":1796046695261234}', o:get('P', child).args)
    end)

    it('jobrt enqueue QUEUE - stores each line\'s args as written, and jobrt job shows them as JSON', function()
      local line = '{"job":"echo","id":"line-1","args":{"list":[],"n":1796046695261234,"p":"a/b","f":0.10}}\n'
      local code, out, err = h.run_jobrt({ 'enqueue', 'P', '-' }, { stdin = line })
      assert.equal(0, code, out .. err)
      assert.equal('{"list":[],"n":1796046695261234,"p":"a/b","f":0.10}', o:get('P', 'line-1').args)
      finished('line-1')
      local c2, shown = h.run_jobrt({ 'job', 'P', 'line-1' })
      assert.equal(0, c2)
      local rec = json.decode(shown)
      assert.equal(BIG, rec.args.n)
      assert.equal(BIG, rec['result-value'].n)
      assert.equal('[]', json.encode(rec.args.list))
      assert.truthy(shown:find('"args": {\n    "f": 0.1,\n    "list": [],\n    "n": 1796046695261234,\n    "p": "a/b"\n  }', 1, true), shown)
    end)

    it('a result that is not UTF-8 fails the job, saying where; an error message that is not is stored repaired', function()
      local rec = finished(q:enqueueJob('P', 'badtext', {}))
      assert.equal('failed', rec.result)
      assert.equal('the result of P.badtext cannot be stored as JSON (result.s: string is not valid UTF-8 (byte offset 3 in the string is 0xe9; JSON text must be UTF-8: send binary data as base64)): return tables of strings, numbers and booleans',
        rec['error-reason'])
      rec = finished(q:enqueueJob('P', 'badreason', {}))
      assert.matches('bad bytes \239\191\189 in the message', rec['error-reason'])
      assert.is_true(json.utf8(rec['error-exception']))
    end)
  end)

  describe('UTF-8 from the command line', function()
    it('refuses JSON-ARGS that are not UTF-8, with the byte offset, and stores nothing', function()
      local code, out, err = h.run_jobrt({ 'enqueue', 'P', 'echo', '{"s":"\255\254"}' })
      assert.equal(2, code)
      assert.equal('', out)
      assert.equal('jobrt enqueue: JSON-ARGS is not valid UTF-8 (byte offset 6 is 0xff; JSON must be UTF-8, RFC 8259: send binary data as base64)\n', err)
      code, _, err = h.run_jobrt({ 'enqueue', 'P', 'echo', '-' }, { stdin = '{"ok":1}\n{"s":"\192\175"}\n' })
      assert.equal(2, code, err)
      assert.equal('jobrt enqueue: line 2 of stdin is not valid UTF-8 (byte offset 6 is 0xc0; JSON must be UTF-8, RFC 8259: send binary data as base64)\n', err)
      assert.equal(0, q:stats('P').pending)
    end)
  end)

  describe('size limits', function()
    it('a result of 400 MB fails its job with the limit named; the worker goes on serving', function()
      local p = start_worker(dir)
      local id = q:enqueueJob('P', 'huge', { mb = 400 })
      local rec = finished(id)
      assert.equal('failed', rec.result)
      assert.equal('the result of P.huge is larger than the limit of 16777216 bytes (--max-payload): return less, or store it elsewhere and return a reference',
        rec['error-reason'])
      assert.equal('successful', finished(q:enqueueJob('P', 'echo', { after = true })).result)
      assert.is_false((p:exited()))
      assert.equal(0, stop_worker(p))
    end)

    it('a worker with --max-payload fails jobs whose args or result are larger', function()
      local p = start_worker(dir, { '--max-payload', '1000' })
      local rec = finished(q:enqueueJob('P', 'sized', { n = 2000 }))
      assert.equal('the result of P.sized is larger than the limit of 1000 bytes (--max-payload): return less, or store it elsewhere and return a reference',
        rec['error-reason'])
      assert.equal('successful', finished(q:enqueueJob('P', 'sized', { n = 900 })).result)
      local id = q:enqueueJob('P', 'echo', { s = ('z'):rep(2000) })
      rec = finished(id)
      assert.equal(('args of job %s are 2008 bytes, more than this worker\'s limit of 1000 bytes (--max-payload)'):format(id),
        rec['error-reason'])
      stop_worker(p)
    end)

    it('the client refuses args over its max_payload before sending anything', function()
      local small = jobrt.connect{ url = h.url, max_payload = 100 }
      local ok, err = pcall(small.enqueueJob, small, 'P', 'echo', { s = ('a'):rep(200) })
      assert.is_false(ok)
      assert.equal('enqueueJob: args is larger than the limit of 100 bytes as JSON text (the connect option max_payload sets the limit)', err)
      small:close()
      assert.equal(0, q:stats('P').pending)
      ok, err = pcall(jobrt.connect, { url = h.url, max_payload = -1 })
      assert.is_false(ok)
      assert.equal("jobrt.connect: option 'max_payload' must be a whole number of bytes from 1 to 536870912 (512 MiB), got -1", err)
    end)

    it('the default is 16 MiB, for the client, the command line and the enqueue script; a larger max_payload goes through', function()
      local s = ('a'):rep(16 * 1024 * 1024)         -- "s" plus quotes and braces: over 16 MiB
      local ok, err = pcall(q.enqueueJob, q, 'P', 'echo', { s = s })
      assert.is_false(ok)
      assert.equal('enqueueJob: args is larger than the limit of 16777216 bytes as JSON text (the connect option max_payload sets the limit)', err)
      local id, serr = o:enqueue('P', 'echo', '{"s":"' .. s .. '"}', {})
      assert.is_nil(id)
      assert.equal('enqueue: ARGV[3] args is 16777224 bytes, more than the limit of 16777216 bytes', serr)
      local code, _, cerr = h.run_jobrt({ 'enqueue', 'P', 'echo', '"' .. ('b'):rep(200) .. '"', '--max-payload', '100' })
      assert.equal(2, code)
      assert.equal('jobrt enqueue: JSON-ARGS is 202 bytes, more than the limit of 100 bytes (--max-payload BYTES sets the limit)\n', cerr)
      local big = jobrt.connect{ url = h.url, max_payload = 32 * 1024 * 1024 }
      local bid = big:enqueueJob('P', 'echo', { s = s })
      assert.equal(16777224, #o:get('P', bid).args)
      big:close()
    end)
  end)
end)
