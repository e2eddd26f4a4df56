-- Fuzz target scripts: each server script's argument checking (lua-server-scripts/*.lua), run
-- in tests/fuzz/redis_mimic.lua rather than in a redis-server: in-process the fuzzer sees which
-- script lines an input reaches (inside Redis they are invisible to it) and runs about a hundred
-- times faster; the mimic implements the commands the scripts use with Redis' replies.
-- Input: the script (first byte), the queue and whether KEYS are spoilt (second byte), then the
-- ARGV, separated by NUL bytes. Each run starts from the same store, made by valid calls: jobs
-- waiting, reserved, failed, delayed, parked, in every queue type.
-- Invariants: a script never raises (a Lua error is an unclear message: it must refuse bad
-- arguments with redis.error_reply naming them); a refusal changes nothing in the store; a
-- reply holds only what Redis can send.
local scripts = require 'jobrt.scripts'
local ops = require 'jobrt.ops'
local mimic = require 'tests.fuzz.redis_mimic'
local util = require 'tests.fuzz.util'

-- the target's own order (the corpus's first byte picks from it), then any script added later
local ORDER = { 'enqueue', 'reserve', 'renew', 'complete', 'requeue_expired', 'release', 'delete', 'get',
                'retry_failed', 'delete_failed', 'list_failed', 'stats', 'register' }
local SOURCES, NAMES = {}, {}
for _, name in ipairs(scripts.NAMES) do SOURCES[name] = assert(scripts.source(name)) end
for _, name in ipairs(ORDER) do if SOURCES[name] then NAMES[#NAMES + 1] = name end end
for _, name in ipairs(scripts.NAMES) do
  local known = false
  for _, n in ipairs(NAMES) do known = known or n == name end
  if not known then NAMES[#NAMES + 1] = name end
end
local QUEUES = { { 'q', 'QUEUE' }, { 'lb', 'LBQUEUE' }, { 'dq', 'DELQUEUE' } }

local function call(store, name, queue, argv)
  local ok, reply = mimic.run(store, name, SOURCES[name], ops.script_keys(name, queue), argv)
  assert(ok, name .. ' raised while the fuzz store was made: ' .. tostring(type(reply) == 'table' and reply.err or reply))
  assert(type(reply) ~= 'table' or reply.err == nil, name .. ' refused while the fuzz store was made: ' .. tostring(type(reply) == 'table' and reply.err))
  return reply
end

-- the store every run starts from
local base = mimic.store()
do
  local function enq(q, t, fn, args, id, hash, delay)
    return call(base, 'enqueue', q, { t, fn, args, id or '', hash or '', '', '', delay or '', '', '', '' })
  end
  for i = 1, 3 do enq('q', 'QUEUE', 'f', '{"i":' .. i .. '}') end
  local res = call(base, 'reserve', 'q', { 'QUEUE', 'w1', '2', '60', '', '' })
  local first = res[4][1]
  call(base, 'complete', 'q', { 'QUEUE', 'w1', '', '', '', first[1], first[4], 'failed', 'x', 'tb', '1' })
  enq('q', 'QUEUE', 'f', '{}', 'later-1', '', '60')
  enq('lb', 'LBQUEUE', 'f', '{}', '', 'h')
  call(base, 'reserve', 'lb', { 'LBQUEUE', 'w1', '1', '60', '', '' })
  enq('lb', 'LBQUEUE', 'f', '{}', '', 'h')
  enq('lb', 'LBQUEUE', 'f', '{}', '', 'g')
  enq('dq', 'DELQUEUE', 'f', '{}', 'd-1', 'h', '60')
  enq('dq', 'DELQUEUE', 'f', '{"a":[]}', '', '', '0')
  call(base, 'reserve', 'dq', { 'DELQUEUE', 'w2', '5', '60', '', '1' })
end

return function(data)
  local r = util.reader(data)
  local name = NAMES[r:int(#NAMES) + 1]
  local qb = r:byte()
  local q = QUEUES[qb % 3 + 1][1]
  local keys = {}
  if name == 'register' then                 -- the worker registry has keys of its own
    keys = { 'jobrt:{workers}', qb % 2 == 0 and 'jobrt:{workers}:w1' or 'jobrt:{workers}:' }
  else
    for i, k in ipairs(ops.script_keys(name, q)) do keys[i] = k end
  end
  if qb >= 230 then                                   -- spoilt KEYS
    local how = qb % 4
    if how == 0 then keys[#keys] = nil
    elseif how == 1 then keys[1] = 'jobrt:{other}:job:'
    elseif how == 2 then keys[(qb % 14) + 1] = 'x'
    else keys[#keys + 1] = 'extra' end
  end
  local argv = util.split(r:rest(), '\0')
  if #argv == 1 and argv[1] == '' then argv = {} end
  local store = base:copy()
  local ok, reply = mimic.run(store, name, SOURCES[name], keys, argv)
  if not ok and type(reply) == 'table' and tostring(reply.err):find('^mimic: ') then return end
  if not ok then
    local shown = {}
    for i, a in ipairs(argv) do shown[i] = ('%q'):format(a) end
    error(('%s raised instead of refusing: %s\n  KEYS of %s, ARGV { %s }'):format(name,
      type(reply) == 'table' and tostring(reply.err) or tostring(reply), q, table.concat(shown, ', ')), 0)
  end
  if type(reply) == 'table' and reply.err ~= nil then
    assert(type(reply.err) == 'string' and reply.err:find('^' .. name .. ': '),
      'a refusal that does not name the script: ' .. tostring(reply.err))
    assert(store:equal(base), name .. ' refused (' .. reply.err .. ') but changed the store')
  end
end
