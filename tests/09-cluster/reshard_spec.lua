-- A reshard under load (make test-cluster): the slot of a busy queue moves to another primary
-- (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches of 10 keys, SETSLOT NODE: what
-- redis-cli --cluster reshard does) while producers enqueue and workers serve it, and back.
-- During the move the queue's scripts answer TRYAGAIN (some of their keys are here, some there)
-- and jobrt waits; after it, MOVED sends every call to the new primary. Zero lost.
local jobrt = require 'jobrt'
local cluster = require 'jobrt.cluster'
local h = require 'tests.helpers'
local load = require 'tests.09-cluster.load'

describe('a cluster under load', function()
  if not h.cluster then
    it('survives a reshard (make test-cluster)', function() pending('needs a cluster: make test-cluster') end)
    return
  end
  local cl = h.cluster

  it('loses no job while the slot of its busy queue moves to another primary and back', function()
    local prim = load.primaries(cl)
    local names = load.queues_on(cl, { prim[1], prim[2] }, 'RS')
    local L = load.start(cl, names, { workers = 2, concurrency = 20, lease = 10 })
    finally(function() pcall(L.stop, L) end)
    L:wait_acked(1000)
    local slot = cluster.keyslot('{' .. names[1] .. '}')
    local t0 = jobrt.monotime()
    local moved = cl:move_slot(slot, prim[3], { batch = 10, pause = 0.002 })
    local took = jobrt.monotime() - t0
    assert.equal(prim[3], cl:primary_of(slot))
    assert.is_true(moved >= 450, 'only ' .. moved .. ' keys moved')   -- records of ~500 jobs and the queue's keys
    L:wait_acked(300)
    local back = cl:move_slot(slot, prim[1], { batch = 10, pause = 0.002 })
    assert.equal(prim[1], cl:primary_of(slot))
    L:wait_acked(300)
    L:stop_producers()
    local acked, retried = L:check_all_done(60)
    jobrt.log('info', 'reshard spec: %d keys moved in %.1f s and %d back; %d jobs acknowledged, all finished; %d enqueue calls sent again',
      moved, took, back, acked, retried)
    L:stop()
  end)
end)
