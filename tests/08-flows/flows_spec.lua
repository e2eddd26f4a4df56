-- Flows (issue 14): a parent job runs after its children, across queues, with their results.
-- Real redis-server and real workers: in-process ones (q:registerWorker) where the spec only
-- needs jobs to run, `jobrt work` processes where it kills one. The news between queues travel
-- through each queue's outbox (lua-server-scripts/README.md "Flows"); the specs look at those
-- keys to prove what happened, and at the records for the outcomes.
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local ops_mod = require 'jobrt.ops'
local flows = require 'jobrt.flows'
local h = require 'tests.helpers'
local ws = require 'tests.worker_support'

local NULL = cjson.null

-- every key of the server but the queue types: what a refused call must leave as it was
local function keys_now(r)
  local ks = r:call('KEYS', '*')
  local t = {}
  for _, k in ipairs(ks) do if k ~= 'RESERVED:QCONFIG' then t[#t + 1] = k end end
  table.sort(t)
  return t
end

describe('flows', function()
  local q, r, o, workers

  before_each(function()
    h.flush()
    q = jobrt.connect(h.url)
    r = h.redis()
    o = q.ops
    for name, t in pairs({ P = 'QUEUE', C = 'QUEUE', D = 'DELQUEUE', L = 'LBQUEUE' }) do q:queueType(name, t) end
    workers = {}
  end)

  after_each(function()
    for _, w in ipairs(workers) do w:stop(1) end
    q:close()
    r:close()
  end)

  -- an in-process worker serving desc
  local function serve(desc, opts)
    local o2 = { log_jobs = false, concurrency = 20 }
    for k, v in pairs(opts or {}) do o2[k] = v end
    local w = assert(q:registerWorker(h.url, desc, o2))
    workers[#workers + 1] = w
    return w
  end

  local function rec(queue, id) return o:get(queue, id) end

  -- the handlers the specs share: a book is made of chapters made of pages
  local BOOK = {
    P = {
      book = function(args, job)
        local parts = {}
        for i, c in ipairs(job.children) do
          parts[i] = { queue = c.queue, id = c.id, state = c.state, result = c.result, error = c.error }
        end
        return { title = args.title, parts = parts }
      end,
      page = function(args)
        if args.fail then error('page ' .. args.n .. ' is torn', 0) end
        return { words = args.n * 10 }
      end,
    },
    C = {
      chapter = function(args, job)
        local words = 0
        for _, c in ipairs(job.children) do words = words + c.result.words end
        return { n = args.n, words = words }
      end,
      page = function(args, job)
        if args.fail then
          if job.redis:call('GET', 'test:fixed') ~= NULL then return { words = 1 } end
          error('page ' .. args.n .. ' is torn', 0)
        end
        return { words = args.n * 10 }
      end,
    },
    D = { page = function(args) return { words = args.n * 10, at = jobrt.now() } end },
  }

  describe('enqueueFlow', function()
    it('creates the tree top-down: parents wait for their children, leaves are queued, each in its queue', function()
      local id, tree = q:enqueueFlow{ queue = 'P', job = 'book', args = { title = 'T' }, opts = { id = 'book-1' },
        children = {
          { queue = 'C', job = 'chapter', args = { n = 1 }, children = {
            { queue = 'P', job = 'page', args = { n = 1 } },
            { queue = 'D', job = 'page', args = { n = 2 }, opts = { delay = 60 } } } },
          { queue = 'C', job = 'page', args = { n = 3 }, ignoreFailure = true },
        } }
      assert.equal('book-1', id)
      assert.same({ queue = 'P', id = 'book-1', children = {
        { queue = 'C', id = '1', children = { { queue = 'P', id = '1', children = {} }, { queue = 'D', id = '1', children = {} } } },
        { queue = 'C', id = '2', children = {} } } }, tree)
      local root = rec('P', 'book-1')
      assert.same({ 'pending', '2', '2', '0' }, { root.state, root.children, root['children-left'], root['children-failed'] })
      assert.equal(1, r:call('ZCARD', 'jobrt:{P}:flow:waiting'))
      local chapter = rec('C', '1')
      assert.same({ 'P', 'book-1', root.flow }, { chapter['parent-queue'], chapter['parent-id'], chapter.flow })
      assert.equal('1', rec('C', '2')['ignore-failure'])
      -- the waiting parents are in no queue; the leaves are
      assert.same({ '2' }, r:call('LRANGE', 'jobrt:{C}:wait', 0, -1))
      assert.same({ '1' }, r:call('LRANGE', 'jobrt:{P}:wait', 0, -1))
      assert.equal(1, r:call('ZCARD', 'jobrt:{D}:due'))
      -- every news was carried over: no outbox is left
      for _, k in ipairs({ 'P', 'C', 'D' }) do assert.equal(0, r:call('ZCARD', 'jobrt:{' .. k .. '}:flow:out')) end
      -- the parent's view of its children
      local kids = q:getFlow('P', 'book-1').children
      assert.same({ { 'C', '1', 'pending', 'chapter' }, { 'C', '2', 'pending', 'page' } },
        { { kids[1].queue, kids[1].id, kids[1].state, kids[1].job }, { kids[2].queue, kids[2].id, kids[2].state, kids[2].job } })
      assert.is_true(kids[2].ignoreFailure)
      assert.same({ queue = 'C', id = '1', state = 'pending' }, q:getFlow('P', '1').parent)
      assert.equal(1, q:stats('C').pending)
      assert.equal(1, q:stats('C').waiting_children)
    end)

    it('works in the callback form too', function()
      local got
      q:enqueueFlow({ queue = 'P', job = 'book', children = { { queue = 'C', job = 'page', args = { n = 1 } } } },
        function(err, id, tree) got = { err, id, tree } end)
      h.wait_for(function() return got end, 5, 'the callback')
      assert.is_nil(got[1])
      assert.equal('1', got[2])
      assert.equal('1', got[3].children[1].id)
    end)

    local bad = {
      { 'not a table', 'x', "enqueueFlow: must be a table {queue=, job=, args=, opts=, children=}, got string" },
      { 'an unknown field', { queue = 'P', job = 'j', kids = {} }, "enqueueFlow: unknown field 'kids' (known: queue, job, args, opts, children, ignoreFailure)" },
      { 'a bad queue name', { queue = 'P', job = 'j', children = { { queue = 'a{b}', job = 'j' } } },
        "enqueueFlow: children[1]: the queue name may use only A-Z a-z 0-9 _ . : - (got 'a{b}', with '{' at byte 2)" },
      { 'no job', { queue = 'P', job = 'j', children = { { queue = 'C', job = 'j', children = { { queue = 'C' } } } } },
        'enqueueFlow: children[1].children[1]: job must be a job name (a string of 1-256 bytes), got nil' },
      { 'an LBQUEUE', { queue = 'P', job = 'j', children = { { queue = 'L', job = 'j' } } },
        "enqueueFlow: children[1]: queue 'L' is an LBQUEUE: it merges identical jobs into one entry, so a job of a flow (which reports to one parent) cannot live there; use a QUEUE or DELQUEUE" },
      { 'a queue without a type', { queue = 'P', job = 'j', children = { { queue = 'nope', job = 'j' } } },
        "enqueueFlow: children[1]: queue 'nope' has no type in RESERVED:QCONFIG: set it with  jobrt queue-type nope QUEUE|LBQUEUE|DELQUEUE" },
      { 'a jobHash', { queue = 'P', job = 'j', opts = { jobHash = 'h' } },
        "enqueueFlow: option 'jobHash' does not apply to a job of a flow: it is its own job, never merged with another" },
      { 'a priority on a DELQUEUE', { queue = 'P', job = 'j', children = { { queue = 'D', job = 'j', opts = { priority = 2 } } } },
        "enqueueFlow: children[1]: option 'priority' applies to QUEUE and LBQUEUE queues only; queue 'D' is a DELQUEUE (its jobs run at their time)" },
      { 'ignoreFailure on the root', { queue = 'P', job = 'j', ignoreFailure = true },
        'enqueueFlow: ignoreFailure applies to a child (its parent then runs despite its failure); this is the root' },
      { 'ignoreFailure not a boolean', { queue = 'P', job = 'j', children = { { queue = 'C', job = 'j', ignoreFailure = 'yes' } } },
        'enqueueFlow: children[1]: ignoreFailure must be true or false, got string' },
      { 'children not an array', { queue = 'P', job = 'j', children = { a = { queue = 'C', job = 'j' } } },
        "enqueueFlow: children must be an array of nodes (keys 1..n), got the key 'a'" },
      { 'an id twice', { queue = 'P', job = 'j', children = { { queue = 'C', job = 'j', opts = { id = 'x' } }, { queue = 'C', job = 'j', opts = { id = 'x' } } } },
        "enqueueFlow: children[2]: job id 'x' of queue 'C' is given twice in the flow (children[1]): each job once" },
      { 'args that are not JSON', { queue = 'P', job = 'j', children = { { queue = 'C', job = 'j', args = { f = print } } } },
        nil },
      { 'a bad option', { queue = 'P', job = 'j', children = { { queue = 'C', job = 'j', opts = { retries = -1 } } } },
        "enqueueFlow: children[1]: option 'retries' must be a whole number from 0 to 1000, got -1" },
    }
    for _, c in ipairs(bad) do
      it('refuses ' .. c[1] .. ' with one message naming the node, and writes nothing', function()
        local before = keys_now(r)
        local ok, err = pcall(q.enqueueFlow, q, c[2])
        assert.is_false(ok)
        if c[3] then assert.equal(c[3], err) else assert.truthy(tostring(err):find('^enqueueFlow: children%[1%]: args%.f: a function cannot be written as JSON')) end
        assert.same(before, keys_now(r))
      end)
    end

    it('refuses too deep a flow', function()
      local node = { queue = 'C', job = 'j' }
      for _ = 1, 40 do node = { queue = 'C', job = 'j', children = { node } } end
      local ok, err = pcall(q.enqueueFlow, q, node)
      assert.is_false(ok)
      assert.truthy(err:find('a flow may be at most 32 levels deep', 1, true), err)
    end)

    it('refuses a child id that is already waiting, before writing anything', function()
      q:enqueueJob('C', 'page', {}, { id = 'busy' })
      local before = keys_now(r)
      local ok, err = pcall(q.enqueueFlow, q, { queue = 'P', job = 'j', children = { { queue = 'C', job = 'j', opts = { id = 'busy' } } } })
      assert.is_false(ok)
      assert.equal("enqueueFlow: children[1]: job id 'busy' is already pending in queue 'C': give the child another id", err)
      assert.same(before, keys_now(r))
    end)

    it('answers existed for a root id that is already waiting, and enqueues nothing more', function()
      q:enqueueJob('P', 'book', {}, { id = 'b' })
      local before = keys_now(r)
      local id, tree = q:enqueueFlow{ queue = 'P', job = 'book', opts = { id = 'b' }, children = { { queue = 'C', job = 'page' } } }
      assert.equal('b', id)
      assert.is_true(tree.existed)
      assert.same(before, keys_now(r))
    end)
  end)

  describe('running', function()
    it('runs a flow of 3 levels across two queues and passes the results up', function()
      serve(BOOK)
      local id = q:enqueueFlow{ queue = 'P', job = 'book', args = { title = 'T' }, children = {
        { queue = 'C', job = 'chapter', args = { n = 1 }, children = {
          { queue = 'P', job = 'page', args = { n = 1 } }, { queue = 'P', job = 'page', args = { n = 2 } } } },
        { queue = 'C', job = 'chapter', args = { n = 2 }, children = { { queue = 'P', job = 'page', args = { n = 4 } } } },
      } }
      local res = q:waitJob('P', id, 10)
      assert.equal('T', res.title)
      assert.same({ { queue = 'C', id = '1', state = 'successful', result = { n = 1, words = 30 } },
                    { queue = 'C', id = '2', state = 'successful', result = { n = 2, words = 40 } } }, res.parts)
      -- every parent started after all its children finished (ids are made per queue, in the
      -- order of the nodes: the book is P/1, its pages P/2, P/3 and P/4)
      assert.equal('1', id)
      for _, c in ipairs({ { 'C', '1', { '2', '3' } }, { 'C', '2', { '4' } } }) do
        local start = tonumber(rec(c[1], c[2])['executing-created'])
        for _, k in ipairs(c[3]) do assert.is_true(tonumber(rec('P', k)['finished-created']) <= start) end
        assert.is_true(tonumber(rec(c[1], c[2])['finished-created']) <= tonumber(rec('P', id)['executing-created']))
      end
      -- nothing of the flow is left but the finished records (they expire)
      for _, k in ipairs({ 'P', 'C' }) do
        assert.equal(0, r:call('EXISTS', 'jobrt:{' .. k .. '}:flow', 'jobrt:{' .. k .. '}:flow:out', 'jobrt:{' .. k .. '}:flow:waiting'))
      end
      assert.is_true(r:call('TTL', 'jobrt:{P}:children:' .. id) > 0)
      -- the tree as the dashboard shows it, from any of its jobs
      local tree = q:getFlowTree('P', '3')
      assert.same({ 'P', id, 'book', 'successful' }, { tree.queue, tree.id, tree.job, tree.state })
      assert.equal(2, #tree.children)
      assert.same({ 'P', '2', 'successful', 10 }, { tree.children[1].children[1].queue, tree.children[1].children[1].id,
        tree.children[1].children[1].state, tree.children[1].children[1].result.words })
    end)

    it('fails the parent when a child fails for good, and its own parent too', function()
      serve(BOOK)
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
        { queue = 'C', job = 'chapter', args = { n = 1 }, children = { { queue = 'C', job = 'page', args = { n = 7, fail = true } } } } } }
      local ok, err = pcall(q.waitJob, q, 'P', id, 10)
      assert.is_false(ok)
      assert.equal("job 1 (book) on queue 'P' failed: child C/1 failed: child C/2 failed: page 7 is torn", err)
      local chapter = rec('C', '1')
      assert.same({ 'finished', 'failed', 'C|2', '0' }, { chapter.state, chapter.result, chapter['failed-child'], chapter.attempts })
      -- both parents are in their failed sets (beside the page), and never ran
      local failed = r:call('ZRANGE', 'jobrt:{C}:failed', 0, -1)
      table.sort(failed)
      assert.same({ '1', '2' }, failed)
      assert.same({ id }, r:call('ZRANGE', 'jobrt:{P}:failed', 0, -1))
      assert.equal('0', rec('P', id).attempts)
    end)

    it('with ignoreFailure runs the parent, which sees the failure', function()
      serve(BOOK)
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
        { queue = 'C', job = 'page', args = { n = 1 } },
        { queue = 'C', job = 'page', args = { n = 2, fail = true }, ignoreFailure = true } } }
      local res = q:waitJob('P', id, 10)
      assert.same({ { queue = 'C', id = '1', state = 'successful', result = { words = 10 } },
                    { queue = 'C', id = '2', state = 'failed', error = 'page 2 is torn' } }, res.parts)
    end)

    it('lets the parent go on when its failed child is retried and succeeds', function()
      serve(BOOK)
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
        { queue = 'C', job = 'page', args = { n = 1 } },
        { queue = 'C', job = 'chapter', args = { n = 2 }, children = { { queue = 'C', job = 'page', args = { n = 3, fail = true } } } } } }
      h.wait_for(function() local j = rec('P', id); return j.result == 'failed' end, 10, 'the book to fail')
      assert.equal('failed', rec('C', '2').result)
      r:call('SET', 'test:fixed', '1')
      -- retry what failed in C: the page runs again (and succeeds); the chapter, failed because of
      -- it, waits for it again instead of running at once
      assert.equal(2, q:retryFailedJobs('C'))
      local res = q:waitJob('P', id, 10)
      assert.same({ 'successful', 'successful' }, { res.parts[1].state, res.parts[2].state })
      assert.same({ n = 2, words = 1 }, res.parts[2].result)
      assert.equal(0, r:call('ZCARD', 'jobrt:{P}:failed'))
      assert.equal('1', rec('C', '2').attempts)       -- the chapter ran once, after its page
    end)

    it('lets the parent go on without a child that was deleted', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
        { queue = 'C', job = 'page', args = { n = 1 } }, { queue = 'D', job = 'page', args = { n = 2 }, opts = { delay = 3600 } } } }
      assert.is_true(q:deleteJob('D', '1'))
      serve(BOOK)
      local res = q:waitJob('P', id, 10)
      assert.same({ 'successful', 'deleted' }, { res.parts[1].state, res.parts[2].state })
    end)

    it("counts a parent's delay from when its children are done; DELQUEUE children run at their time", function()
      serve(BOOK)
      local t0 = jobrt.now()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', opts = { delay = 0.5 }, children = {
        { queue = 'D', job = 'page', args = { n = 1 }, opts = { delay = 0.5 } } } }
      local res = q:waitJob('P', id, 10)
      local child_at = res.parts[1].result.at
      assert.is_true(child_at - t0 >= 0.45, 'the child ran at its time')
      assert.is_true(tonumber(rec('P', id)['executing-created']) - child_at >= 0.45, "the parent's delay counted from then")
    end)

    it('runs a parent whose children are all in its own queue', function()
      serve(BOOK)
      local id = q:enqueueFlow{ queue = 'C', job = 'chapter', args = { n = 9 }, children = {
        { queue = 'C', job = 'page', args = { n = 1 } }, { queue = 'C', job = 'page', args = { n = 2 } } } }
      assert.same({ n = 9, words = 30 }, q:waitJob('C', id, 10))
    end)
  end)

  describe('deleting', function()
    it('a parent deleted while its children wait takes its pending children (and theirs) with it', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
        { queue = 'C', job = 'chapter', children = { { queue = 'D', job = 'page', args = { n = 1 } }, { queue = 'C', job = 'page' } } },
        { queue = 'C', job = 'page', args = { n = 2 } } } }
      -- the second page runs (a worker holds its lease): it is not pending, so it stays
      local res = o:reserve('C', 'w1', 1, 30)
      assert.equal('3', res.jobs[1].id)
      assert.is_true(q:deleteJob('P', id))
      -- deleteJob carried the deletions over: the chapter and both its pages are gone
      assert.is_nil(rec('P', id))
      assert.is_nil(rec('C', '1'))
      assert.is_nil(rec('D', '1'))
      assert.is_nil(rec('C', '2'))
      assert.same({}, r:call('LRANGE', 'jobrt:{C}:wait', 0, -1))
      assert.equal(0, r:call('ZCARD', 'jobrt:{D}:due'))
      assert.equal('executing', rec('C', '3').state)
      -- the running child ends; its news find no parent and are dropped
      assert.equal(1, o:complete('C', 'w1', { { id = '3', attempt = 1, ok = true, value = '1' } }).completed)
      assert.is_true(flows.carry(o, 'C', { fresh = true }))
      local left = keys_now(r)
      for _, k in ipairs(left) do
        assert.is_nil(k:find(':flow') or k:find(':children:'), 'left behind: ' .. k)
      end
    end)

    it('a parent deleted from the command line takes its children too', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = { { queue = 'C', job = 'page' } } }
      local code, out = h.run_jobrt({ 'delete', 'P', id, '--redis', h.url })
      assert.equal(0, code)
      assert.equal("deleted job 1 of queue 'P'\n", out)
      assert.is_nil(rec('C', '1'))
    end)

    it('drain of a child queue tells the parents their children are gone', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = { { queue = 'C', job = 'page', args = { n = 1 } } } }
      assert.equal(1, q:drain('C'))
      serve(BOOK)
      local res = q:waitJob('P', id, 10)
      assert.same('deleted', res.parts[1].state)
    end)
  end)

  describe('news between queues', function()
    it('count once when they are carried over twice', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
        { queue = 'C', job = 'page', args = { n = 1 } }, { queue = 'C', job = 'page', args = { n = 2 } } } }
      local res = o:reserve('C', 'w', 1, 30)
      o:complete('C', 'w', { { id = res.jobs[1].id, attempt = 1, ok = true, value = '{"words":10}' } })
      local t = assert(o:flow_take('C', 10, flows.FRESH_MS, flows.HOLD_MS))
      assert.equal(1, #t.entries)
      assert.equal('u:1', t.entries[1].key)
      local st = { o:flow_deliver('P', { { key = t.entries[1].key, text = t.entries[1].text } }) }
      assert.same({ { 'applied' }, 0 }, st)
      -- the same news again (a carrier that died before its flow_ack, then another one)
      st = { o:flow_deliver('P', { { key = t.entries[1].key, text = t.entries[1].text } }) }
      assert.same({ { 'stale' }, 0 }, st)
      assert.equal('1', rec('P', id)['children-left'])
      assert.equal(1, o:flow_ack('C', { { key = t.entries[1].key, stamp = t.entries[1].stamp } }))
      assert.equal(0, r:call('ZCARD', 'jobrt:{C}:flow:out'))
    end)

    it('written by a worker that died before carrying them are carried by a live worker of that queue', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = { { queue = 'C', job = 'page', args = { n = 5 } } } }
      -- a worker reserves the child ...
      local res = o:reserve('C', 'doomed', 1, 30)
      assert.equal(1, #res.jobs)
      -- ... while a live one serves both queues
      serve(BOOK)
      -- the doomed worker completes the child, and dies before carrying the news over
      local t0 = jobrt.now()
      local sum = o:complete('C', 'doomed', { { id = '1', attempt = 1, ok = true, value = '{"words":50}' } })
      assert.equal(1, sum.flows)
      assert.equal(1, r:call('ZCARD', 'jobrt:{C}:flow:out'))
      -- the live worker heard "flow:<ms>" and carries them once the writer's hold is over
      local out = q:waitJob('P', id, 15)
      assert.same({ words = 50 }, out.parts[1].result)
      local waited = tonumber(rec('P', id)['executing-created']) - t0
      assert.is_true(waited >= flows.FRESH_MS / 1000 - 0.5, 'carried after the hold, not before: ' .. waited)
      assert.equal(0, r:call('ZCARD', 'jobrt:{C}:flow:out'))
    end)

    it('left over in an outbox are carried by a worker that starts', function()
      local id = q:enqueueFlow{ queue = 'P', job = 'book', children = { { queue = 'C', job = 'page', args = { n = 6 } } } }
      local res = o:reserve('C', 'doomed', 1, 30)
      o:complete('C', 'doomed', { { id = res.jobs[1].id, attempt = 1, ok = true, value = '{"words":60}' } })
      -- the queue's outbox waits; a worker started later (serving the child's queue only) takes it
      -- once overdue, and the parent's queue gets its news
      serve({ C = BOOK.C })
      h.wait_for(function() return rec('P', id)['children-left'] == '0' end, 15, 'the news to reach the parent')
      assert.same({ '1' }, r:call('LRANGE', 'jobrt:{P}:wait', 0, -1))
    end)
  end)

  describe('creation cut off', function()
    it("after the root was written is finished by the workers of the root's queue", function()
      local checked = require('jobrt.client').check_flow{ queue = 'P', job = 'book', opts = { id = 'cut' }, children = {
        { queue = 'C', job = 'chapter', args = { n = 1 }, opts = { id = 'ch' }, children = {
          { queue = 'P', job = 'page', args = { n = 2 }, opts = { id = 'pg' } } } } } }
      -- the root alone, as enqueueFlow writes it first: its client died before carrying the rest
      assert.same({ { 'created' }, 1 }, { o:flow_deliver('P', { flows.root_entry(checked, 'cutflow') }) })
      assert.is_nil(rec('C', 'ch'))
      assert.equal(1, r:call('ZCARD', 'jobrt:{P}:flow:out'))
      serve(BOOK)
      local res = q:waitJob('P', 'cut', 20)
      assert.same({ n = 1, words = 20 }, res.parts[1].result)
      -- one key per call: the two queues' keys are in different slots of a cluster
      assert.equal(0, r:call('EXISTS', 'jobrt:{P}:flow:out'))
      assert.equal(0, r:call('EXISTS', 'jobrt:{C}:flow:out'))
    end)
  end)

  describe('1,000 children under one parent', function()
    it('costs about the same per child as 100 (no quadratic cost)', function()
      serve({ P = { sum = function(args, job)
        local n = 0
        for _, c in ipairs(job.children) do n = n + c.result end
        return n
      end }, C = { one = function(args) return args.i end } }, { concurrency = 50 })
      -- enqueueing is measured while C is paused (nothing runs meanwhile), then running: from
      -- resume to the parent's result (every child runs and tells the parent, which then runs)
      local function run(n)
        local kids = {}
        for i = 1, n do kids[i] = { queue = 'C', job = 'one', args = { i = i } } end
        q:pause('C')
        local t0 = jobrt.monotime()
        local id = q:enqueueFlow{ queue = 'P', job = 'sum', children = kids }
        local t1 = jobrt.monotime()
        assert.equal(n, q:stats('C').pending)
        local t2 = jobrt.monotime()
        q:resume('C')
        local total = q:waitJob('P', id, 120)
        local t3 = jobrt.monotime()
        assert.equal(n * (n + 1) / 2, total)
        return (t1 - t0) / n, (t3 - t2) / n
      end
      run(20)                                       -- warm up
      local e100, r100 = run(100)
      local e1000, r1000 = run(1000)
      io.stderr:write(string.format('\n  flows: per child at 100: enqueue %.3f ms, run %.3f ms; at 1000: enqueue %.3f ms, run %.3f ms\n',
        e100 * 1000, r100 * 1000, e1000 * 1000, r1000 * 1000))
      -- a quadratic cost would make each child 10 times dearer at 1,000
      assert.is_true(e1000 < e100 * 3, string.format('enqueue %.3f ms per child at 1000 vs %.3f at 100', e1000 * 1000, e100 * 1000))
      assert.is_true(r1000 < r100 * 3, string.format('run %.3f ms per child at 1000 vs %.3f at 100', r1000 * 1000, r100 * 1000))
    end)
  end)
end)

describe('flows with jobrt work processes', function()
  local JOBS = [[
local jobrt = require 'jobrt'
return {
  P = { _type = "QUEUE",
    book = function(args, job)
      local words = 0
      for _, c in ipairs(job.children) do words = words + c.result.words end
      return { words = words, n = #job.children }
    end },
  C = { _type = "QUEUE",
    page = function(args, job)
      job.redis:call("SET", "test:pid:" .. job.id, jobrt.pid())
      if args.s and job.attempt == 1 then jobrt.sleep(args.s) end
      return { words = args.n * 10 }
    end },
}
]]
  local dir, r, q, procs
  setup(function() dir = ws.jobs_dir{ ['book.lua'] = JOBS } end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    h.flush()
    r = h.redis()
    q = jobrt.connect(h.url)
    q:queueType('P', 'QUEUE')
    q:queueType('C', 'QUEUE')
    procs = {}
  end)
  after_each(function()
    for _, p in ipairs(procs) do ws.stop_worker(p) end
    q:close()
    r:close()
  end)

  it("completes the flow when a child's worker is killed mid-job (its lease runs out)", function()
    procs[1] = ws.start_worker(dir, { '--lease', '1', '--concurrency', '5' })
    local id = q:enqueueFlow{ queue = 'P', job = 'book', children = {
      { queue = 'C', job = 'page', args = { n = 1 } }, { queue = 'C', job = 'page', args = { n = 2, s = 30 } } } }
    h.wait_for(function() return r:call('GET', 'test:pid:2') ~= NULL end, 10, 'the slow child to start')
    assert.equal(tostring(procs[1]:pid()), r:call('GET', 'test:pid:2'))
    procs[1]:kill('SIGKILL')
    procs[1]:wait()
    r:call('DEL', 'test:pid:2')
    -- another worker takes the child back once its lease ran out, and the flow goes on
    procs[2] = ws.start_worker(dir, { '--lease', '1', '--concurrency', '5' })
    local res = q:waitJob('P', id, 20)
    assert.same({ words = 30, n = 2 }, res)
    -- the child ran twice: its first attempt died with the worker
    local rec = q:getJob('C', '2')
    assert.same({ '2', 'successful' }, { rec.attempts, rec.result })
    assert.equal(tostring(procs[2]:pid()), r:call('GET', 'test:pid:2'))
  end)

  it('jobrt enqueue --flow FILE --wait runs the flow and prints the result; jobrt job shows the tree', function()
    procs[1] = ws.start_worker(dir, { '--concurrency', '5' })
    local file = dir .. '/flow.json'
    local f = assert(io.open(file, 'w'))
    f:write('{"queue":"P","job":"book","opts":{"id":"b-1"},"children":[{"queue":"C","job":"page","args":{"n":1}},' ..
      '{"queue":"C","job":"page","args":{"n":2},"opts":{"id":"p-2"}}]}')
    f:close()
    local code, out, err = h.run_jobrt({ 'enqueue', '--flow', file, '--wait', '--redis', h.url })
    assert.equal(0, code, err)
    assert.same({ n = 2, words = 30 }, cjson.decode(out))
    assert.equal("jobrt enqueue: enqueued a flow of 3 jobs (queues C, P); its root is job b-1 of queue 'P'\n", err)
    local code2, out2 = h.run_jobrt({ 'job', 'P', 'b-1', '--redis', h.url })
    assert.equal(0, code2)
    local j = cjson.decode(out2)
    assert.same({ { queue = 'C', id = '1', job = 'page', state = 'successful', result = { words = 10 } },
                  { queue = 'C', id = 'p-2', job = 'page', state = 'successful', result = { words = 20 } } }, j['child-jobs'])
    local code3, out3 = h.run_jobrt({ 'job', 'C', 'p-2', '--redis', h.url })
    assert.equal(0, code3)
    assert.same({ queue = 'P', id = 'b-1', state = 'finished', result = 'successful' }, cjson.decode(out3)['parent-job'])
    -- the root from the command line, the children from stdin
    local code4, out4 = h.run_jobrt({ 'enqueue', 'P', 'book', '--id', 'b-2', '--flow', '-', '--wait', '--redis', h.url },
      { stdin = '[{"queue":"C","job":"page","args":{"n":4}}]' })
    assert.equal(0, code4)
    assert.same({ n = 1, words = 40 }, cjson.decode(out4))
  end)

  it('jobrt enqueue --flow refuses a malformed file with one line and exit 2', function()
    local cases = {
      { '{"queue":"P","job":"book","children":{"a":1}}', "jobrt enqueue: children must be a JSON array of nodes (keys 1..n), got the key 'a'\n" },
      { '[1]', 'jobrt enqueue: the flow read from stdin must be a JSON object (the root job) {"queue":...,"job":...,"args":...,"children":[...]}, or give QUEUE and JOB before --flow and list the children in the file\n' },
      { '{"queue":"P","job":"book","children":[{"queue":"C","job":"page","opts":{"jobHash":"h"}}]}',
        "jobrt enqueue: children[1]: option 'jobHash' does not apply to a job of a flow: it is its own job, never merged with another\n" },
      { '{nope', nil },
    }
    for _, c in ipairs(cases) do
      local code, out, err = h.run_jobrt({ 'enqueue', '--flow', '-', '--redis', h.url }, { stdin = c[1] })
      assert.equal(2, code, err)
      assert.equal('', out)
      if c[2] then assert.equal(c[2], err) else assert.truthy(err:find('^jobrt enqueue: the flow read from stdin is not valid JSON'), err) end
    end
    assert.same({}, keys_now(r))
  end)

  it('jobrt enqueue --flow: every usage or shape error exits 2 with a message in the command line\'s terms', function()
    q:queueType('L', 'LBQUEUE')
    q:queueType('D', 'DELQUEUE')
    local before = keys_now(r)
    local arr = dir .. '/arr.json'
    local f = assert(io.open(arr, 'w'))
    f:write('[{"queue":"C","job":"page","args":{"n":1}}]')
    f:close()
    local function run(args, stdin)
      local a = { 'enqueue' }
      for _, x in ipairs(args) do a[#a + 1] = x end
      a[#a + 1] = '--redis'
      a[#a + 1] = h.url
      local code, out, err = h.run_jobrt(a, { stdin = stdin })
      assert.equal('', out)
      return code, err
    end
    local STDIN = "jobrt enqueue: `-` (stdin) and --flow cannot be combined: give JSON-ARGS on the command line and the children in the file, or read the whole flow from stdin with --flow -\n"
    local cases = {
      { { 'P', '-', '--flow', arr }, nil, STDIN },
      { { 'P', 'book', '-', '--flow', arr }, '{"a":1}', STDIN },
      { { 'P', 'book', '--flow', arr, '--flow', arr }, nil,
        ('jobrt enqueue: --flow is given twice (%s and %s): give it once\n'):format(arr, arr) },
      { { 'P', 'book', '--flow', dir }, nil, ('jobrt enqueue: cannot read the flow file %s: Is a directory\n'):format(dir) },
      { { 'P', 'book', '--flow', dir .. '/nope.json' }, nil,
        ('jobrt enqueue: cannot read the flow file %s/nope.json: No such file or directory\n'):format(dir) },
      { { 'P', 'book', '--flow', '-' }, '[3]',
        'jobrt enqueue: children[1]: must be a JSON object {"queue":..., "job":..., "args":..., "opts":{...}, "children":[...]}, got number\n' },
      { { 'P', 'book', '--flow', '-' }, '[[1]]',
        'jobrt enqueue: children[1]: must be a JSON object {"queue":..., "job":..., "args":..., "opts":{...}, "children":[...]}, got an array\n' },
      { { 'P', 'book', '--flow', '-' }, '[{"queue":"C","job":"page","opts":[1]}]',
        'jobrt enqueue: children[1]: opts must be a JSON object {"id":..., "priority":..., "delay":...}, got an array\n' },
      { { 'P', 'book', '--max-payload', '10', '--flow', '-' }, '[{"queue":"C","job":"page","args":{"a":"xxxxxxxxxxxx"}}]',
        'jobrt enqueue: children[1]: args is larger than the limit of 10 bytes as JSON text (--max-payload BYTES sets the limit)\n' },
      { { 'P', 'book', '--flow', '-' }, '[{"queue":"C","job":"page","opts":{"id":"c-1"}},{"queue":"C","job":"page","opts":{"id":"c-1"}}]',
        "jobrt enqueue: children[2]: job id 'c-1' of queue 'C' is given twice in the flow (children[1]): each job once\n" },
      { { 'P', 'book', '--flow', '-' }, '[{"queue":"L","job":"page"}]', "^jobrt enqueue: children%[1%]: queue 'L' is an LBQUEUE" },
      { { 'P', 'book', '--flow', '-' }, '[{"queue":"D","job":"page","opts":{"priority":3}}]', "^jobrt enqueue: children%[1%]: .*priority" },
    }
    for i, c in ipairs(cases) do
      local code, err = run(c[1], c[2])
      assert.equal(2, code, i .. ': ' .. err)
      if c[3]:sub(1, 1) == '^' then assert.matches(c[3], err, nil, nil, i) else assert.equal(c[3], err, i) end
    end
    -- a queue with no type is the server's state, not the command's shape: exit 1 (as enqueue)
    local code, err = run({ 'P', 'book', '--flow', '-' }, '[{"queue":"NOTYPE","job":"page"}]')
    assert.equal(1, code, err)
    assert.matches("queue 'NOTYPE' has no type", err)
    assert.same(before, keys_now(r))
  end)
end)
