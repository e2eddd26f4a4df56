-- jobrt.cluster, the router, against a real cluster of 3 primaries and 3 replicas (make
-- test-cluster starts it: tests/cluster.lua). Under make test (one server) only the parts that
-- need no cluster run; the rest is pending.
local jobrt = require 'jobrt'
local redis = require 'jobrt.redis'
local cluster = require 'jobrt.cluster'
local ops_mod = require 'jobrt.ops'
local h = require 'tests.helpers'

describe('jobrt.cluster', function()
  describe('keyslot', function()
    it('is CRC16-XMODEM mod 16384 of the key, or of its hash tag (the cluster spec\'s examples)', function()
      assert.equal(12739, cluster.keyslot('123456789'))
      assert.equal(cluster.keyslot('user1000'), cluster.keyslot('{user1000}.following'))
      assert.equal(cluster.keyslot('{user1000}.following'), cluster.keyslot('{user1000}.followers'))
      assert.equal(cluster.keyslot('bar'), cluster.keyslot('foo{bar}{zap}'))
      assert.equal(cluster.keyslot('{bar'), cluster.keyslot('foo{{bar}}zap'))
      -- an empty tag: the whole key is hashed
      assert.is_not.equal(cluster.keyslot(''), cluster.keyslot('foo{}{bar}'))
      assert.equal(cluster.keyslot('{QUEUE}'), cluster.keyslot('jobrt:{QUEUE}:wait'))
    end)
  end)

  describe('pattern_tag', function()
    it('is the hash tag of every key a glob matches, or nil when keys could be in other slots', function()
      assert.equal('Q', cluster.pattern_tag('jobrt:{Q}:*'))
      assert.equal('a.b', cluster.pattern_tag('{a.b}*'))
      assert.equal('a*b', cluster.pattern_tag('x{a\\*b}:*'))         -- escaped: a literal *
      assert.equal('a{b', cluster.pattern_tag('x{a{b}'))
      assert.is_nil(cluster.pattern_tag('*{Q}:*'))                    -- a{b}{Q}:x matches, slot of b
      assert.is_nil(cluster.pattern_tag('jobrt:{Q*}:*'))
      assert.is_nil(cluster.pattern_tag('jobrt:{}:*'))
      assert.is_nil(cluster.pattern_tag('jobrt:{Q'))
      assert.is_nil(cluster.pattern_tag('plain*'))
      assert.is_nil(cluster.pattern_tag(nil))
    end)
  end)

  describe('addresses', function()
    it('parses redis+cluster:// and rediss+cluster:// into seeds', function()
      local t = assert(redis.parse_url('redis+cluster://u:p%40w@10.0.0.1:7000,10.0.0.2,[::1]:7002'))
      assert.same({ { host = '10.0.0.1', port = 7000 }, { host = '10.0.0.2', port = 6379 },
                    { host = '::1', port = 7002 } }, t.cluster_nodes)
      assert.equal('u', t.user)
      assert.equal('p@w', t.password)
      assert.is_nil(t.tls)
      assert.is_true(assert(redis.parse_url('rediss+cluster://h:1')).tls)
      assert.equal('cluster 10.0.0.1:7000,10.0.0.2:6379,[::1]:7002',
        redis.describe('redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002'))
    end)

    it('refuses a malformed node list, naming the entry', function()
      local _, err, code = redis.parse_url('redis+cluster://h:1,,h:2')
      assert.equal('EINVAL', code)
      assert.matches("missing host %(an empty entry in the node list%)", err)
      _, err = redis.parse_url('redis+cluster://h:99999')
      assert.matches('port must be 1%-65535', err)
      _, err = redis.parse_url('redis+cluster://h:1?x=1')
      assert.matches("unknown query parameter 'x'", err)
    end)

    it('refuses cluster_nodes that are not {host=, port=} and cluster = false with them', function()
      local _, err, code = redis.connect{ cluster_nodes = { 'h:1' } }
      assert.equal('EINVAL', code)
      assert.equal('redis.connect: cluster_nodes[1] must be {host = string, port = number}', err)
      _, err = redis.connect{ cluster_nodes = { { host = 'h', port = 1 } }, cluster = false }
      assert.equal('redis.connect: cluster_nodes and cluster = false contradict each other', err)
    end)

    it('a single server stays a single connection; redis+cluster:// to it says it is no cluster node', function()
      local s = h.start_redis()
      local r = assert(redis.connect(s.url))
      assert.is_false(cluster.is_router(r))
      assert.is_true(redis.is_connection(r))
      r:close()
      local _, err, code = redis.connect('redis+cluster://127.0.0.1:' .. s.port)
      assert.equal('EINVAL', code)
      assert.matches('127%.0%.0%.1:' .. s.port .. ' is not a cluster node %(cluster_enabled:0%): use redis://127%.0%.0%.1:' .. s.port, err)
      _, err, code = redis.connect{ url = s.url, cluster = true }
      assert.equal('EINVAL', code)
      assert.matches('is not a cluster node', err)
      s:stop()
    end)

    it('a node with no slots is refused; a cluster that serves some slots is down in info(), and jobrt health says so', function()
      local s = h.start_redis{ args = { '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf' } }
      local raw = assert(redis.connect{ url = s.url, cluster = false })
      local _, err, code = redis.connect(s.url)
      assert.equal('ECONNREFUSED', code)
      assert.matches('serves no slots yet %(cluster_state:fail%?%): create the cluster first', err)
      assert.equal('OK', raw:call('CLUSTER', 'ADDSLOTSRANGE', 0, 100))
      local r = assert(redis.connect(s.url))
      assert.is_true(cluster.is_router(r))
      assert.equal('down', r:info().state)
      assert.equal('the cluster serves 101 of 16384 slots', r:info().error)
      r:close()
      local st, _, serr = h.run_jobrt({ 'health', '--redis', s.url })
      assert.equal(1, st)
      assert.equal('jobrt health: the cluster at 127.0.0.1:' .. s.port .. ' is not ok: cluster_state:fail (101 of 16384 slots served)\n', serr)
      raw:close()
      s:stop()
    end)

    it('no seed answering is ECONNREFUSED naming every seed', function()
      local _, err, code = redis.connect{ url = 'redis+cluster://127.0.0.1:1,127.0.0.1:2', connect_timeout = 1 }
      assert.equal('ECONNREFUSED', code)
      assert.matches('cannot read the slot map of the cluster from any node %(127%.0%.0%.1:1: .*; 127%.0%.0%.1:2: ', err)
    end)
  end)

  if not h.cluster then
    it('routes calls on a real cluster (make test-cluster)', function()
      pending('needs a cluster: make test-cluster')
    end)
    return
  end

  local cl = h.cluster
  local r
  before_each(function()
    r = assert(redis.connect(cl.url))
    assert(r:call('FLUSHALL'))
  end)
  after_each(function() r:close() end)

  -- the live primary servers, as the cluster says
  local function primaries()
    local out = {}
    for _, port in ipairs(cl:ports()) do
      local c = cl:node(port)
      local role = c:call('ROLE')
      c:close()
      if type(role) == 'table' and role[1] == 'master' then out[#out + 1] = cl:server(port) end
    end
    return out
  end

  -- a key (with prefix) whose slot the given server serves
  local function key_on(server, prefix)
    for i = 1, 100000 do
      local k = (prefix or 'k') .. i
      if cl:primary_of(cluster.keyslot(k)) == server then return k end
    end
  end

  describe('connecting', function()
    it('a plain address of any node, primary or replica, gives a router', function()
      for _, port in ipairs(cl:ports()) do
        local c = assert(redis.connect('redis://127.0.0.1:' .. port))
        assert.is_true(cluster.is_router(c))
        local info = c:info()
        assert.is_true(info.cluster)
        assert.equal('up', info.state)
        assert.equal(3, #info.nodes)
        assert.matches('^127%.0%.0%.1:%d+,127%.0%.0%.1:%d+,127%.0%.0%.1:%d+ %(cluster%)$', info.addr)
        c:close()
      end
    end)

    it('redis+cluster:// skips seeds that do not answer', function()
      local c = assert(redis.connect('redis+cluster://127.0.0.1:1,127.0.0.1:' .. cl:ports()[2]))
      assert(c:call('SET', 'x', '1'))
      assert.equal('1', c:call('GET', 'x'))
      c:close()
    end)

    it('cluster = false gives the one node, which answers MOVED for other slots', function()
      local p = primaries()[1]
      local c = assert(redis.connect{ host = '127.0.0.1', port = p.port, cluster = false })
      assert.is_false(cluster.is_router(c))
      local other = key_on(primaries()[2])
      local v, err, code, word = c:call('GET', other)
      assert.is_nil(v)
      assert.equal('EREDIS', code)
      assert.equal('MOVED', word)
      assert.matches('^MOVED %d+ ', err)
      c:close()
    end)

    it('refuses a database other than 0', function()
      local _, err, code = redis.connect(cl.url .. '/2')
      assert.is_not_nil(code)
      assert.matches('database', err)
      local v
      v, err, code = r:call('SELECT', 1)
      assert.is_nil(v)
      assert.equal('EINVAL', code)
      assert.equal('EINVAL: a Redis Cluster has only database 0: SELECT is refused (name the database in the address of a single server instead)', err)
      assert.equal('OK', r:call('SELECT', 0))
    end)
  end)

  describe('routing', function()
    it('sends each key to the primary of its slot: keys land on every primary', function()
      for i = 1, 300 do assert.equal('OK', r:call('SET', 'key:' .. i, i)) end
      local total = 0
      for _, p in ipairs(primaries()) do
        local c = cl:node(p.port)
        local n = c:call('DBSIZE')
        c:close()
        assert.is_true(n > 50, 'primary ' .. p.port .. ' holds ' .. n .. ' keys')
        total = total + n
      end
      assert.equal(300, total)
      assert.equal(300, r:call('DBSIZE'))
      for i = 1, 300 do assert.equal(tostring(i), r:call('GET', 'key:' .. i)) end
      assert.equal(300, #r:call('KEYS', 'key:*'))
    end)

    it('refuses keys of different slots before sending anything, naming the slots and the fix', function()
      local v, err, code, word = r:call('MSET', 'a', '1', 'b', '2')
      assert.is_nil(v)
      assert.equal('EREDIS', code)
      assert.equal('CROSSSLOT', word)
      assert.equal("CROSSSLOT Keys in request don't hash to the same slot: MSET's keys 'a' (slot 15495) and 'b' (slot 3300) are in different slots of the cluster, and one command runs on one node; give the keys a common hash tag so they share a slot, e.g. '{user42}:a' and '{user42}:b' (only the part inside {} is hashed)", err)
      assert.equal(0, r:call('EXISTS', 'a'))
      assert.equal('OK', r:call('MSET', '{u}a', '1', '{u}b', '2'))
      assert.same({ '1', '2' }, r:call('MGET', '{u}a', '{u}b'))
      v, err, code, word = r:call('EVAL', 'return 1', 2, 'a', 'b')
      assert.equal('CROSSSLOT', word)
      -- commands whose keys move (COMMAND GETKEYS)
      v, err, code, word = r:call('ZUNIONSTORE', 'z1', 2, 'z2', 'z3')
      assert.equal('CROSSSLOT', word)
      assert.equal(0, r:call('ZUNIONSTORE', '{z}1', 2, '{z}2', '{z}3'))
    end)

    it('finds the key of commands it has no table for (COMMAND INFO) and of subcommands', function()
      for i = 1, 20 do assert(r:call('SET', 'obj:' .. i, 'x')) end
      for i = 1, 20 do assert.equal('embstr', r:call('OBJECT', 'ENCODING', 'obj:' .. i)) end
      for i = 1, 20 do assert.equal(0, r:call('SETBIT', 'bits:' .. i, 7, 1)) end
      for i = 1, 20 do assert.equal(1, r:call('bitcount', 'bits:' .. i)) end
    end)

    it('SCAN goes to the node of the {hash tag} in its MATCH pattern, and is refused without one', function()
      for i = 1, 30 do assert(r:call('SET', 'jobrt:{scanq}:' .. i, i)) end
      local seen, cursor = 0, '0'
      repeat
        local res = assert(r:call('SCAN', cursor, 'MATCH', 'jobrt:{scanq}:*', 'COUNT', 100))
        cursor = res[1]
        seen = seen + #res[2]
      until cursor == '0'
      assert.equal(30, seen)
      local v, err, code = r:call('SCAN', 0)
      assert.is_nil(v)
      assert.equal('EINVAL', code)
      assert.matches('SCAN in a Redis Cluster needs MATCH with a pattern that starts with a {hash tag}', err)
    end)

    it('FLUSHALL empties every primary', function()
      for i = 1, 50 do assert(r:call('SET', 'f' .. i, i)) end
      assert.equal('OK', r:call('FLUSHALL'))
      for _, p in ipairs(primaries()) do
        local c = cl:node(p.port)
        assert.equal(0, c:call('DBSIZE'))
        c:close()
      end
    end)

    it('keeps MULTI ... EXEC on the node of its first key, and refuses a key of another slot in it', function()
      assert.equal('OK', r:call('MULTI'))
      assert.equal('QUEUED', r:call('SET', '{tx}a', '1'))
      assert.equal('QUEUED', r:call('INCR', '{tx}n'))
      local v, err, code, word = r:call('SET', '{other}b', '1')
      assert.is_nil(v)
      assert.equal('CROSSSLOT', word)
      assert.equal(("CROSSSLOT Keys in request don't hash to the same slot: SET's key '{other}b' is in slot %d, but this transaction's keys are in slot %d; in a cluster a transaction (WATCH, MULTI ... EXEC) runs on one node and all its keys must share a slot: give them a common hash tag, e.g. '{user42}:a' and '{user42}:b'")
        :format(cluster.keyslot('{other}b'), cluster.keyslot('{tx}')), err)
      assert.same({ 'OK', 1 }, r:call('EXEC'))
      assert.equal('1', r:call('GET', '{tx}a'))
      assert.equal('OK', r:call('WATCH', '{tx}a'))
      assert.equal('OK', r:call('MULTI'))
      assert.equal('QUEUED', r:call('INCR', '{tx}n'))
      local c = assert(redis.connect(cl.url))
      assert(c:call('SET', '{tx}a', 'changed'))                    -- breaks the WATCH
      c:close()
      assert.equal(redis.null, r:call('EXEC'))
      v, err = r:call('EXEC')
      assert.equal('ERR EXEC without MULTI', err)
    end)

    it('refuses commands that would disturb its routing', function()
      local v, err, code = r:call('ASKING')
      assert.is_nil(v)
      assert.equal('EINVAL', code)
      assert.matches('ASKING is not sent through a cluster connection', err)
    end)
  end)

  describe('scripts', function()
    it('are loaded on every primary, and a node that lost them gets them again (NOSCRIPT per node)', function()
      local sha = assert(r:call('SCRIPT', 'LOAD', "return redis.call('INCR', KEYS[1])"))
      for _, p in ipairs(primaries()) do
        local c = cl:node(p.port)
        assert.same({ 1 }, c:call('SCRIPT', 'EXISTS', sha))
        c:close()
      end
      local victim = primaries()[2]
      local k = key_on(victim, 'sc')
      local c = cl:node(victim.port)
      assert.equal('OK', c:call('SCRIPT', 'FLUSH'))
      assert.same({ 0 }, c:call('SCRIPT', 'EXISTS', sha))
      assert.equal(1, r:call('EVALSHA', sha, 1, k))                 -- NOSCRIPT, loaded, sent again
      assert.same({ 1 }, c:call('SCRIPT', 'EXISTS', sha))
      assert.equal('1', c:call('GET', k))                             -- ran once
      c:close()
    end)

    it('every queue operation works on queues of every primary', function()
      local o = assert(ops_mod.new(r))
      local names = {}
      for i = 1, 30 do names[i] = 'RQ' .. i end
      local on = {}
      for _, q in ipairs(names) do
        assert(o:set_queue_type(q, 'QUEUE'))
        local id = assert(o:enqueue(q, 'f', '{}', {}))
        local res = assert(o:reserve(q, 'w1', 1, 30))
        assert.equal(id, res.jobs[1].id)
        assert(o:complete(q, 'w1', { { id = id, attempt = 1, ok = true, value = '1' } }))
        assert.equal('finished', o:get(q, id).state)
        on[cl:primary_of(cluster.keyslot('{' .. q .. '}'))] = true
      end
      local n = 0
      for _ in pairs(on) do n = n + 1 end
      assert.equal(3, n)
    end)
  end)

  describe('redirections', function()
    local function other_primary(than)
      for _, p in ipairs(primaries()) do if p ~= than then return p end end
    end

    it('follows MOVED when a slot moved to another primary, and remaps it', function()
      local k = 'moved:{mv}'
      assert(r:call('SET', k, 'v'))
      local slot = cluster.keyslot(k)
      local from = cl:primary_of(slot)
      local to = other_primary(from)
      assert.equal(1, cl:move_slot(slot, to))
      assert.equal('v', r:call('GET', k))                             -- MOVED, then from `to`
      assert.equal('OK', r:call('SET', k, 'w'))
      local c = cl:node(to.port)
      assert.equal('w', c:call('GET', k))
      c:close()
      cl:move_slot(slot, from)
      assert.equal('w', r:call('GET', k))
    end)

    it('follows ASK for a key already migrated, and retries TRYAGAIN until the slot is stable', function()
      local slot = cluster.keyslot('{ask}')
      assert(r:call('SET', '{ask}moved', 'm'))
      assert(r:call('SET', '{ask}stays', 's'))
      local from = cl:primary_of(slot)
      local to = other_primary(from)
      local src, dst = cl:node(from.port), cl:node(to.port)
      local src_id, dst_id = src:call('CLUSTER', 'MYID'), dst:call('CLUSTER', 'MYID')
      assert(dst:call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src_id))
      assert(src:call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst_id))
      assert(src:call('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', '{ask}moved'))
      assert.equal('s', r:call('GET', '{ask}stays'))                  -- still on the source
      assert.equal('m', r:call('GET', '{ask}moved'))                  -- ASK: ASKING + GET on `to`
      local v, err, code, word = src:call('GET', '{ask}moved')
      assert.equal('ASK', word)
      -- both keys at once: TRYAGAIN while the slot is split; the router waits for it
      local t0 = jobrt.monotime()
      jobrt.spawn(function()
        jobrt.sleep(0.3)
        assert(src:call('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', '{ask}stays'))
        assert(dst:call('CLUSTER', 'SETSLOT', slot, 'NODE', dst_id))
        assert(src:call('CLUSTER', 'SETSLOT', slot, 'NODE', dst_id))
      end)
      assert.same({ 'm', 's' }, r:call('MGET', '{ask}moved', '{ask}stays'))
      assert.is_true(jobrt.monotime() - t0 >= 0.25, 'MGET answered while the slot was split')
      src:close()
      dst:close()
      cl:wait_ok()
      cl:move_slot(slot, from)
    end)

    it('a queue script meets TRYAGAIN during a migration (no script runs on half a queue) and goes on after it', function()
      local o = assert(ops_mod.new(r))
      assert(o:set_queue_type('MIG', 'QUEUE'))
      for i = 1, 20 do assert(o:enqueue('MIG', 'f', '{}', { id = 'm' .. i })) end
      local slot = cluster.keyslot('{MIG}')
      local from = cl:primary_of(slot)
      local to = other_primary(from)
      local src, dst = cl:node(from.port), cl:node(to.port)
      local src_id, dst_id = src:call('CLUSTER', 'MYID'), dst:call('CLUSTER', 'MYID')
      assert(dst:call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src_id))
      assert(src:call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst_id))
      -- half the records moved: a reserve that ran here would find ids without records
      local keys = src:call('CLUSTER', 'GETKEYSINSLOT', slot, 10)
      local argv = { 'MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS' }
      for _, k in ipairs(keys) do argv[#argv + 1] = k end
      assert(src:call(unpack(argv)))
      local raw = { src:call('EVALSHA', require('jobrt.scripts').sha('stats'), 14, unpack(ops_mod.keys('MIG'))) }
      assert.equal('TRYAGAIN', raw[4])
      jobrt.spawn(function()
        jobrt.sleep(0.3)
        cl:move_slot(slot, to)                                        -- finishes the migration
      end)
      local res = assert(o:reserve('MIG', 'w1', 20, 30))
      assert.equal(20, #res.jobs)
      assert.equal(0, o:stats('MIG').dropped)
      src:close()
      dst:close()
      cl:move_slot(slot, from)
    end)
  end)

  describe('lost calls', function()
    -- kills the router's connections to the primary of key's slot (server side)
    local function wait_blocked_on(k)
      local c = cl:node(cl:primary_of(cluster.keyslot(k)).port)
      h.wait_blocked(c)
      c:close()
    end

    local function kill_clients_of(k)
      local p = cl:primary_of(cluster.keyslot(k))
      local c = cl:node(p.port)
      local n = c:call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
      c:close()
      return n
    end

    it('a write whose reply never came is not sent again: it fails with ECONN', function()
      local k = '{lost}list'
      local got
      jobrt.spawn(function()
        got = { r:call('BLPOP', k, 0) }
      end)
      wait_blocked_on(k)
      assert.is_true(kill_clients_of(k) >= 1)
      h.wait_for(function() return got end, 5, 'the BLPOP to fail')
      assert.is_nil(got[1])
      assert.equal('ECONN', got[3])
      local c = assert(redis.connect(cl.url))
      assert.equal(1, c:call('LPUSH', k, 'x'))
      jobrt.sleep(0.2)
      assert.equal(1, c:call('LLEN', k), 'the BLPOP was sent again and took the element')
      c:close()
    end)

    it('a read whose reply never came is sent again', function()
      local k = '{lostro}stream'
      local got
      jobrt.spawn(function()
        got = { r:call('XREAD', 'BLOCK', 0, 'STREAMS', k, '$') }
      end)
      wait_blocked_on(k)
      assert.is_true(kill_clients_of(k) >= 1)
      local c = assert(redis.connect(cl.url))
      -- the XREAD is sent again once the connection is back: add until it sees an entry
      h.wait_for(function()
        c:call('XADD', k, '*', 'f', 'v')
        jobrt.sleep(0.05)
        return got
      end, 10, 'the XREAD sent again to see an entry')
      c:close()
      assert.equal('table', type(got[1]), tostring(got[2]))
      assert.equal(k, got[1][1][1])
    end)
  end)

  describe('pub/sub', function()
    it('subscribes on the primary of the channel\'s slot; PUBLISH on any node reaches it', function()
      local got = {}
      local ch = 'jobrt:{pubq}:wake'
      assert(r:subscribe(ch, function(_, m) got[#got + 1] = m end))
      local owner = cl:primary_of(cluster.keyslot(ch))
      for _, port in ipairs(cl:ports()) do
        local c = cl:node(port)
        c:call('PUBLISH', ch, 'from ' .. port)
        c:close()
      end
      h.wait_for(function() return #got == #cl:ports() end, 5, 'a message from every node')
      local c = cl:node(owner.port)
      local subs = c:call('PUBSUB', 'NUMSUB', ch)
      c:close()
      assert.equal(1, subs[2])
      r:unsubscribe(ch)
    end)
  end)

  describe('job.redis', function()
    it('routes a handler\'s calls by their first key and fails a cross-slot call with the CROSSSLOT message', function()
      local q = assert(jobrt.connect(cl.url))
      assert(q:queueType('JR', 'QUEUE'))
      local w = q:registerWorker(nil, { JR = {
        spread = function(_, job)
          for i = 1, 30 do job.redis:call('SET', 'jr:' .. i, i) end
          return job.redis:call('GET', 'jr:17')
        end,
        cross = function(_, job) return job.redis:call('MSET', 'a', 1, 'b', 2) end,
        tagged = function(_, job)
          job.redis:call('MULTI')
          job.redis:call('INCR', '{jr}n')
          job.redis:call('INCR', '{jr}n')
          return job.redis:call('EXEC')
        end,
      } })
      assert.equal('17', q:run('JR', 'spread', {}, { wait = 10 }))
      assert.same({ 1, 2 }, q:run('JR', 'tagged', {}, { wait = 10 }))
      local ok, err = pcall(q.run, q, 'JR', 'cross', {}, { wait = 10 })
      assert.is_false(ok)
      assert.matches("job.redis MSET: CROSSSLOT Keys in request don't hash to the same slot: MSET's keys 'a' %(slot 15495%) and 'b' %(slot 3300%)", tostring(err))
      w:stop()
      q:close()
    end)
  end)
end)
