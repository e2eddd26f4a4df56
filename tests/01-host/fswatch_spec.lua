-- File watching: the binding on libuv's uv_fs_event (jobrt.core.fswatch, runtime/fswatch.c)
-- and the recursive, coalescing watcher built on it (jobrt.watcher), which --watch uses.
local h = require 'tests.helpers'
local jobrt = require 'jobrt'
local fswatch = require 'jobrt.core.fswatch'
local watcher = require 'jobrt.watcher'

local function write(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
end

local function rm(dir) os.execute("rm -rf '" .. dir .. "'") end

describe('jobrt.core.fswatch', function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() rm(dir) end)

  it('calls back with the name and kind of each change in the directory', function()
    local seen = {}
    local w = assert(fswatch.watch(dir, function(name, event, err)
      seen[#seen + 1] = { name = name, event = event, err = err }
    end))
    assert.equal(dir, w:path())
    write(dir .. '/a.lua', 'x')
    h.wait_for(function() return #seen > 0 end, 5, 'an event')
    assert.equal('a.lua', seen[1].name)
    assert.is_truthy(seen[1].event == 'rename' or seen[1].event == 'change')
    assert.is_nil(seen[1].err)
    os.remove(dir .. '/a.lua')
    h.wait_for(function() return seen[#seen].event == 'rename' and #seen > 1 end, 5, 'the removal')
    w:close()
    w:close()                          -- twice: harmless
    assert.is_nil(w:path())
    -- closed: nothing more comes (a second watcher of the folder sees the event; by then the
    -- first would have seen it too)
    local n, other = #seen, 0
    local w2 = assert(fswatch.watch(dir, function() other = other + 1 end))
    write(dir .. '/b.lua', 'y')
    h.wait_for(function() return other > 0 end, 5, 'the other watcher to see the event')
    jobrt.sleep(0)
    w2:close()
    assert.equal(n, #seen)
  end)

  it('a path that does not exist: nil and a message with the code', function()
    local w, err = fswatch.watch(dir .. '/nope', function() end)
    assert.is_nil(w)
    assert.equal('ENOENT: cannot watch ' .. dir .. '/nope: no such file or directory', err)
  end)

  it('wrong arguments raise', function()
    assert.has_error(function() fswatch.watch(nil, function() end) end)
    assert.has_error(function() fswatch.watch(dir) end)
  end)
end)

describe('jobrt.watcher', function()
  local dir, w
  before_each(function()
    dir = h.tmpdir()
    os.execute("mkdir -p '" .. dir .. "/lib/deep' '" .. dir .. "/.git'")
    write(dir .. '/a.lua', 'return 1')
    write(dir .. '/lib/u.lua', 'return 2')
  end)
  after_each(function()
    if w then w:close() end
    w = nil
    rm(dir)
  end)

  local function parent() return dir:match('^(.*)/[^/]*$') end

  local function start(opts)
    local calls = {}
    w = assert(watcher.new({ dir }, function(names) calls[#calls + 1] = names end, opts or { settle = 0.05 }))
    return calls
  end

  it('watches every folder under the path (lib/ too, hidden ones not), and its parent', function()
    start()
    assert.same({ parent(), dir, dir .. '/lib', dir .. '/lib/deep' }, w:dirs())
  end)

  it('a burst of edits is one call, naming the Lua files; editor leftovers are not named', function()
    local calls = start({ settle = 0.2 })
    write(dir .. '/.a.lua.swp', 'swap')
    write(dir .. '/a.lua~', 'backup')
    write(dir .. '/4913', '')
    write(dir .. '/a.lua', 'return 10')
    write(dir .. '/lib/deep/v.lua', 'return 3')
    write(dir .. '/a.lua', 'return 11')
    h.wait_for(function() return #calls > 0 end, 5, 'the call')
    assert.same({ { dir .. '/a.lua', dir .. '/lib/deep/v.lua' } }, calls)
    assert.equal(1, w.settled)
  end)

  it('a change that leaves the sources as they were calls nothing', function()
    local calls = start()
    write(dir .. '/a.lua', 'return 1')           -- same text
    h.wait_for(function() return w.settled == 1 end, 5, 'the events to settle')
    assert.same({}, calls)
    write(dir .. '/a.lua', 'return 5')
    h.wait_for(function() return #calls == 1 end, 5, 'the call')
  end)

  it('new folders are watched, removed ones let go', function()
    local calls = start()
    os.execute("mkdir -p '" .. dir .. "/new/sub'")
    write(dir .. '/new/sub/b.lua', 'return 1')
    h.wait_for(function() return #calls == 1 end, 5, 'the call for the new folder')
    assert.same({ parent(), dir, dir .. '/lib', dir .. '/lib/deep', dir .. '/new', dir .. '/new/sub' }, w:dirs())
    write(dir .. '/new/sub/b.lua', 'return 2')      -- seen through the new watch
    h.wait_for(function() return #calls == 2 end, 5, 'the call for the edit in it')
    assert.same({ dir .. '/new/sub/b.lua' }, calls[2])
    rm(dir .. '/new')
    h.wait_for(function() return #calls == 3 end, 5, 'the call for the removal')
    assert.same({ parent(), dir, dir .. '/lib', dir .. '/lib/deep' }, w:dirs())
  end)

  it('the served folder removed and made again (a deploy that replaces it) is watched again', function()
    local calls = start()
    local copy = dir .. '.new'
    assert(os.execute("cp -r '" .. dir .. "' '" .. copy .. "'") == 0)
    write(copy .. '/a.lua', 'return 7')
    rm(dir)
    h.wait_for(function() return #calls == 1 end, 5, 'the call for the removal')
    assert.same({ parent() }, w:dirs())
    assert(os.rename(copy, dir))
    h.wait_for(function() return #calls == 2 end, 5, 'the call for the new folder')
    assert.same({ parent(), dir, dir .. '/lib', dir .. '/lib/deep' }, w:dirs())
    write(dir .. '/lib/u.lua', 'return 8')         -- and its files are watched again
    h.wait_for(function() return #calls == 3 end, 5, 'the call for an edit in it')
  end)

  it('a file served by name: its folder and its lib/ are watched', function()
    local calls = {}
    w = assert(watcher.new({ dir .. '/a.lua' }, function(names) calls[#calls + 1] = names end, { settle = 0.05 }))
    assert.same({ dir, dir .. '/lib', dir .. '/lib/deep' }, w:dirs())
    write(dir .. '/lib/u.lua', 'return 20')
    h.wait_for(function() return #calls == 1 end, 5, 'the call')
  end)

  it('sources changed before the watches were in place: called at once', function()
    local seen = watcher.sources({ dir })
    write(dir .. '/a.lua', 'return 99')
    local calls = {}
    w = assert(watcher.new({ dir }, function(names) calls[#calls + 1] = names end, { settle = 0.05, seen = seen }))
    h.wait_for(function() return #calls == 1 end, 5, 'the call')
  end)

  it('a path that cannot be watched: nil and the message', function()
    local ww, err = watcher.new({ dir .. '/nope' }, function() end)
    assert.is_nil(ww)
    assert.equal('cannot watch ' .. dir .. '/nope: no such file or directory', err)
  end)
end)
