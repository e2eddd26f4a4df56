-- proc.spawn with numbers in args and env (issue: they were converted to strings that nothing
-- referenced, then freed by the collector before uv_spawn copied them: garbage argv).
local proc = require 'jobrt.core.proc'

describe('proc.spawn', function()
  it('passes numbers in args and env exactly, spawn after spawn, with the collector busy', function()
    -- The collector runs a step at every allocation and does much work per step, and the env
    -- holds many numbers whose conversion allocates: on the old code, strings converted from
    -- args were freed and their memory reused by these before uv_spawn read them.
    local pause = collectgarbage('setpause', 0)
    local stepmul = collectgarbage('setstepmul', 1000)
    local ok, err = pcall(function()
      for i = 1, 30 do
        local args = { '/bin/sh', '-c', 'printf "%s\\n" "$@"; printf "E=%s\\n" "$E"', 'sh' }
        for k = 1, 50 do args[#args + 1] = (i * 1000 + k) * (k % 2 == 0 and 1 or 1.5) end
        local env = { 'E=' .. i, 'PATH=/usr/bin:/bin' }
        for k = 1, 3000 do env[#env + 1] = 1e6 + k + i / 8 end
        local p = assert(proc.spawn{ file = '/bin/sh', args = args, env = env, capture = true })
        local code = p:wait()
        local out = p:output()
        assert.equal(0, code)
        -- the expected text is made only now: an interned copy made earlier would have kept the
        -- converted strings alive
        local want = {}
        for k = 5, #args do want[#want + 1] = tostring(args[k]) end
        assert.equal(table.concat(want, '\n') .. ('\nE=%d\n'):format(i), out, 'spawn ' .. i)
      end
    end)
    collectgarbage('setpause', pause)
    collectgarbage('setstepmul', stepmul)
    assert(ok, err)
  end)

  it('numbers given directly as env entries arrive as their text', function()
    local p = assert(proc.spawn{ file = '/usr/bin/env', args = { 'env' }, env = { 42, 'A=1' }, capture = true })
    p:wait()
    local out = p:output()
    assert.matches('^42\nA=1\n$', out)
  end)

  local BAD = {
    { { file = 1, args = {} }, 'proc.spawn: file must be a string' },
    { { file = '/bin/true', args = { '/bin/true', {} } }, 'proc.spawn: args[2] must be a string or a number, got table' },
    { { file = '/bin/true', args = { 'true' }, env = { true } }, 'proc.spawn: env[1] must be a string or a number, got boolean' },
    { { file = '/bin/true', args = { 'true' }, env = 'A=1' }, 'proc.spawn: env must be a table of "K=V" strings, or nil to inherit' },
    { { file = '/bin/true', args = { 'true' }, cwd = 5 }, 'proc.spawn: cwd must be a string' },
  }
  for i, c in ipairs(BAD) do
    it(('refuses malformed options, naming them #%d'):format(i), function()
      local ok, err = pcall(proc.spawn, c[1])
      assert.is_false(ok)
      assert.equal(c[2], err)
    end)
  end
end)
