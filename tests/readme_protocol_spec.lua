-- lua-server-scripts/README.md is the protocol for other languages: its worked example is run
-- verbatim (redis-cli against the test server) and its output compared, and every script, key
-- and record field must be documented, so the document cannot drift from the scripts.
local h = require 'tests.helpers'
local ops = require 'jobrt.ops'
local scripts = require 'jobrt.scripts'

local README = 'lua-server-scripts/README.md'

local function read(path)
  local f = assert(io.open(path, 'rb'))
  local t = f:read('*a')
  f:close()
  return t
end

-- the text under "## <heading...>" up to the next "## "
local function section(text, heading)
  local start = text:find('\n## ' .. heading, 1, true)
  if not start then return nil end
  local stop = text:find('\n## ', start + 1, true)
  return text:sub(start, stop or #text)
end

-- the fenced blocks of one language, in order
local function blocks(text, lang)
  local out = {}
  for body in text:gmatch('\n```' .. lang .. '\n(.-)\n```') do out[#out + 1] = body end
  return out
end

-- redis-cli options for the test server's URL
local function cli_args(url)
  local path = url:match('^unix://([^?]+)')
  if path then return '-s ' .. path end
  local rest = assert(url:match('^redis://(.*)$'), 'unsupported test URL ' .. url)
  local auth, hostpart = rest:match('^(.*)@([^@]*)$')
  hostpart = hostpart or rest
  local host, port, db = hostpart:match('^([^:/]+):?(%d*)/?(%d*)$')
  local a = '-h ' .. host .. ' -p ' .. (port ~= '' and port or '6379')
  local pw = auth and (auth:match('^[^:]*:(.*)$') or auth)
  if pw and pw ~= '' then a = a .. ' -a ' .. pw .. ' --no-auth-warning' end
  if db ~= '' then a = a .. ' -n ' .. db end
  return a
end

local function lines(text)
  local t = {}
  for l in (text .. '\n'):gmatch('(.-)\n') do t[#t + 1] = l end
  if t[#t] == '' then t[#t] = nil end
  return t
end

-- runs a sh block verbatim against the test server ($REDIS = its address); returns the output
local function run_sh(sh)
  assert.truthy(sh:find('$REDIS', 1, true), 'the example must use $REDIS for the address')
  local script = sh:gsub('%$REDIS', (cli_args(h.url):gsub('%%', '%%%%')))
  local path = os.tmpname()
  local f = assert(io.open(path, 'wb'))
  f:write(script, '\n')
  f:close()
  local p = assert(io.popen('sh ' .. path .. ' 2>&1'))
  local out = p:read('*a')
  p:close()
  os.remove(path)
  return out
end

describe('lua-server-scripts/README.md', function()
  local text = read(README)

  describe('worked example', function()
    local sec = section(text, 'Worked example')

    it('is there, as one sh block and its output', function()
      assert.truthy(sec, 'no "## Worked example" section')
      assert.equal(1, #blocks(sec, 'sh'))
      assert.equal(1, #blocks(sec, 'text'))
    end)

    it('runs verbatim against the test server and prints the documented output', function()
      h.flush()
      local out = run_sh(blocks(sec, 'sh')[1])
      local want, got = lines(blocks(sec, 'text')[1]), lines(out)
      for i = 1, math.max(#want, #got) do
        local w, g = want[i], got[i]
        if w == '<ms>' then
          assert.truthy(g and g:match('^%d+$'), ('line %d: expected a Unix time in ms, got %s\nfull output:\n%s'):format(i, tostring(g), out))
        else
          assert.equal(w, g, ('line %d differs; full output:\n%s'):format(i, out))
        end
      end
      -- and the job really is finished, as any client would see it
      local r = h.redis()
      local o = assert(ops.new(r))
      local j = o:get('emails', 'welcome-ann')
      assert.same({ 'finished', 'successful', '{"sent":true}' }, { j.state, j.result, j['result-value'] })
      r:close()
    end)
  end)

  describe('hand-written jobs', function()
    local sec = section(text, 'Hand-written jobs')

    it('is there, as one sh block', function()
      assert.truthy(sec, 'no "## Hand-written jobs" section')
      assert.equal(1, #blocks(sec, 'sh'))
    end)

    it('runs verbatim: the job is queued, idle workers are woken, and reserve hands it out', function()
      h.flush()
      local r = h.redis()
      local o = assert(ops.new(r))
      assert(o:set_queue_type('emails', 'QUEUE'))
      local sub = h.redis()
      local wake = {}
      sub:subscribe('jobrt:{emails}:wake', function(_, msg) if msg then wake[#wake + 1] = msg end end)
      local out = run_sh(blocks(sec, 'sh')[1])
      -- HSET added 3 fields, the wait list holds 1 id, 1 subscriber got the wake-up
      assert.same({ '3', '1', '1' }, lines(out), out)
      h.wait_for(function() return #wake == 1 end, 3, 'the wake-up')
      local t = r:call('TIME')
      assert.truthy(wake[1]:match('^%d+000$'), wake[1])
      assert.is_true(tonumber(wake[1]) <= tonumber(t[1]) * 1000)
      local res = assert(o:reserve('emails', 'worker-1', 10, 30))
      assert.equal(1, #res.jobs)
      local j = res.jobs[1]
      assert.same({ 'hand-1', 'send', '{"to":"bob@example.com"}', 1 }, { j.id, j.fn, j.args, j.attempt })
      local rec = o:get('emails', 'hand-1')
      assert.same({ 'hand-1', 'emails', 'executing' }, { rec.id, rec.queue, rec.state })
      sub:close()
      r:close()
    end)
  end)

  it('documents every script', function()
    for _, name in ipairs(scripts.NAMES) do
      assert.truthy(text:find('`' .. name .. '.lua`', 1, true), name .. '.lua is not documented')
    end
  end)

  it('documents every key in order', function()
    local keys = section(text, 'Keys')
    for i, k in ipairs(ops.keys('Q')) do
      assert.truthy(keys:find('| ' .. i .. ' | `' .. k .. '` |', 1, true), k .. ' is not documented as KEYS[' .. i .. ']')
    end
  end)

  it('documents every record field the scripts write', function()
    local rec = section(text, 'Job record')
    local fields = {}
    for _, name in ipairs(scripts.NAMES) do
      local src = assert(scripts.source(name))
      -- field names appear as HSET/HMGET arguments: 'name' literals next to record writes
      for stmt in src:gmatch("redis%.call%('H[MS][EG]T', rec,(.-)%)%s*\n") do
        for field in stmt:gmatch("'([%a][%a%-]*)'") do fields[field] = true end
      end
    end
    fields.pending, fields.executing, fields.finished, fields.successful, fields.failed = nil, nil, nil, nil, nil
    for field in pairs(fields) do
      assert.truthy(rec:find('`' .. field .. '`', 1, true), "record field '" .. field .. "' is not documented")
    end
  end)

  it('documents RESERVED:QCONFIG and both channels', function()
    assert.truthy(text:find('RESERVED:QCONFIG', 1, true))
    for _, c in pairs(ops.channels('Q')) do assert.truthy(text:find(c, 1, true), c) end
  end)
end)
