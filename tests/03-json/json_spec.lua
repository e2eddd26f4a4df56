-- jobrt.json, the module on its own: each rule of its header comment, with the exact messages.
local json = require 'jobrt.json'
local cjson = require 'cjson'
local redis = require 'jobrt.redis'

local function fails(code, msg, ok, err, c)
  assert.is_nil(ok)
  assert.equal(msg, err)
  assert.equal(code, c)
end

describe('jobrt.json', function()
  describe('null', function()
    it('is the same value as cjson.null, redis.null and jobrt.null', function()
      assert.equal(cjson.null, json.null)
      assert.equal(redis.null, json.null)
      assert.equal(require('jobrt').null, json.null)
      assert.equal('[null,null]', json.encode({ json.null, cjson.null }))
      assert.equal(json.null, json.decode('null'))
      assert.equal(3, #json.decode('[1,null,3]'))
    end)
  end)

  describe('numbers', function()
    local CASES = {
      { 1796046695261234, '1796046695261234' },      -- 14 digits in lua-cjson 2.1.0
      { 2 ^ 53, '9007199254740992' },
      { -(2 ^ 53), '-9007199254740992' },
      { 0.1, '0.1' },
      { 0.30000000000000004, '0.30000000000000004' },
      { 1 / 3, '0.3333333333333333' },
      { 12.5, '12.5' },
      { 1e-7, '1e-07' },
      { 1e300, '1e+300' },
      { 2 ^ 63, '9.223372036854776e+18' },
      { 123456789012.5, '123456789012.5' },
      { -0.000001, '-0.000001' },
    }
    for _, c in ipairs(CASES) do
      it(('writes %s exactly and reads it back'):format(c[2]), function()
        assert.equal(c[2], json.encode(c[1]))
        assert.equal(c[1], json.decode(c[2]))
      end)
    end

    it('round-trips 200,000 doubles, whatever their bits', function()
      local ffi = require 'ffi'
      local u = ffi.new('union { double d; uint64_t u; }')
      local seed = 1
      for _ = 1, 200000 do
        seed = (seed * 6364136223846793005ULL + 1442695040888963407ULL)
        u.u = seed
        local v = u.d
        if v == v and v ~= math.huge and v ~= -math.huge then
          local back = json.decode(json.encode(v))
          if back ~= v then error(('%.17g came back as %.17g'):format(v, back)) end
        end
      end
    end)

    it('refuses NaN and infinities, naming where they are', function()
      fails('EVALUE', 'value.a[2]: NaN cannot be written as JSON: use a finite number, a string or jobrt.null',
        json.encode({ a = { 1, 0 / 0 } }))
      fails('EVALUE', 'result: inf cannot be written as JSON: use a finite number, a string or jobrt.null',
        json.encode(1 / 0, { name = 'result' }))
      fails('EJSON', 'JSON text is not valid JSON (byte offset 0: number too large for a double, found \'1\')',
        json.decode('1e400'))
    end)

    it('reads integers beyond 2^53 as the nearest double, and keeps the JSON number grammar', function()
      assert.equal(2 ^ 64, json.decode('18446744073709551616'))
      for _, bad in ipairs({ '01', '1.', '.5', '+1', '1e', '-', '0x10', 'NaN', 'Infinity' }) do
        local v, err, code = json.decode(bad)
        assert.is_nil(v, bad)
        assert.equal('EJSON', code, bad .. ': ' .. tostring(err))
      end
    end)
  end)

  describe('strings', function()
    it("escapes only '\"', '\\' and control characters: '/' and UTF-8 stay as they are", function()
      assert.equal('"a/b é 東京 \\" \\\\ \\n \\u0001 \127"', json.encode('a/b é 東京 " \\ \n \1 \127'))
      assert.equal('a/b\1', json.decode('"a\\/b\\u0001"'))
      assert.equal('😀', json.decode('"\\ud83d\\ude00"'))
      assert.equal('a\0b', json.decode('"a\\u0000b"'))
    end)

    it('refuses invalid UTF-8 when encoding, with the byte offset in the string', function()
      fails('EUTF8', 'args.s: string is not valid UTF-8 (byte offset 3 in the string is 0xff; JSON text must be UTF-8: send binary data as base64)',
        json.encode({ s = 'abc\255' }, { name = 'args' }))
      fails('EUTF8', [[value["k\xc3"]: string is not valid UTF-8 (byte offset 1 in the string is 0xc3; JSON text must be UTF-8: send binary data as base64)]],
        json.encode({ ['k\195'] = 1 }))
    end)

    -- byte strings that are not UTF-8 (RFC 3629), and the offset of their first bad byte
    local BAD = {
      { '"\255\254"', 1 },                  -- bytes that never appear in UTF-8
      { '"\192\175"', 1 },                  -- overlong '/'
      { '"\224\128\175"', 1 },              -- overlong, three bytes
      { '"\237\160\128"', 1 },              -- a surrogate (U+D800)
      { '"\244\144\128\128"', 1 },          -- above U+10FFFF
      { '"caf\195"', 4 },                   -- cut short at the end
      { '"\226\130x"', 1 },                 -- cut short before an ASCII byte
      { '"ok"\128', 4 },                    -- outside any string
      { '["\128"]', 2 },                    -- a lone continuation byte
    }
    for _, c in ipairs(BAD) do
      it(('refuses %q when decoding, at byte offset %d'):format(c[1], c[2]), function()
        local v, err, code = json.decode(c[1])
        assert.is_nil(v)
        assert.equal('EUTF8', code)
        assert.matches(('^JSON text is not valid UTF%%-8 %%(byte offset %d is 0x%%x%%x;'):format(c[2]), err)
        local ok, off = json.utf8(c[1])
        assert.is_nil(ok)
        assert.equal(c[2], off)
      end)
    end

    it('refuses \\u escapes of lone surrogates and raw control characters', function()
      for _, s in ipairs({ '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"a\nb"', '"\\x"' }) do
        local v, _, code = json.decode(s)
        assert.is_nil(v, s)
        assert.equal('EJSON', code, s)
      end
    end)

    it('sanitize replaces each invalid byte with U+FFFD and keeps valid text as it is', function()
      local s = 'ok é'
      assert.equal(s, json.sanitize(s))
      assert.equal('a\239\191\189b\239\191\189\239\191\189c', json.sanitize('a\255b\226\130c'))
    end)
  end)

  describe('tables', function()
    it('keeps [] an array: decoded arrays are marked, and json.array marks new ones', function()
      assert.equal('{"a":[],"b":{}}', json.encode(json.decode('{"a":[],"b":{}}'), { sort = true }))
      assert.equal('[]', json.encode(json.array()))
      assert.equal('{}', json.encode({}))
      assert.is_true(json.is_array(json.decode('[1]')))
      assert.is_false(json.is_array(json.decode('{}')))
      local t = json.decode('[[],{"x":[]}]')
      assert.equal('[[],{"x":[]}]', json.encode(t))
    end)

    it('writes sorted keys when asked, so equal tables give equal text', function()
      local a, b = {}, {}
      for i = 1, 50 do a['k' .. i] = i end
      for i = 50, 1, -1 do b['k' .. i] = i end
      assert.equal(json.encode(a, { sort = true }), json.encode(b, { sort = true }))
      assert.equal('{"a":1,"b":[2,{"c":3,"d":4}]}', json.encode({ b = { 2, { d = 4, c = 3 } }, a = 1 }, { sort = true }))
    end)

    local REFUSED = {
      { { 1, 2, x = 3 }, [[value: table mixes array items ([1]...) with named keys ("x"): a JSON value is either an array or an object; nest one in the other]] },
      { { 1, nil, 3 }, 'value: sparse array: [3] is set but [2] is nil; JSON arrays have no holes: fill them with jobrt.null, or use string keys' },
      { { [2] = 'b' }, 'value: sparse array: [2] is set but [1] is nil; JSON arrays have no holes: fill them with jobrt.null, or use string keys' },
      { { [1.5] = 1 }, 'value: table has a key that is the number 1.5: JSON objects have string keys, arrays the keys 1..n' },
      { { [true] = 1 }, 'value: table has a key that is a boolean: JSON objects have string keys, arrays the keys 1..n' },
      { { x = { print } }, 'value.x[1]: a function cannot be written as JSON: use tables, strings, numbers, booleans and jobrt.null' },
      { { co = coroutine.create(print) }, 'value.co: a thread cannot be written as JSON: use tables, strings, numbers, booleans and jobrt.null' },
      { { u = io.stdout }, 'value.u: a userdata cannot be written as JSON: use tables, strings, numbers, booleans and jobrt.null' },
      { json.array({ x = 1 }), [[value: table is marked as an array (jobrt.json.array) but has named keys ("x")]] },
    }
    for i, c in ipairs(REFUSED) do
      it(('refuses what JSON cannot hold, saying where and why #%d'):format(i), function()
        fails('EVALUE', c[2], json.encode(c[1]))
      end)
    end

    it('refuses cycles', function()
      local t = { a = {} }
      t.a.b = t
      fails('EVALUE', 'value.a.b: table contains itself (a cycle): JSON cannot hold cycles', json.encode(t))
      local shared = { 1 }
      assert.equal('[[1],[1]]', json.encode({ shared, shared }))    -- the same table twice is no cycle
    end)

    it('a repeated key in decoded text: the last one wins', function()
      assert.same({ a = 2 }, json.decode('{"a":1,"a":2}'))
    end)
  end)

  describe('limits', function()
    it('refuses nesting deeper than MAX_DEPTH both ways', function()
      local ok = json.decode(('['):rep(1000) .. (']'):rep(1000))
      assert.is_table(ok)
      fails('EDEPTH', 'JSON text is nested deeper than 1000 levels (byte offset 1000)',
        json.decode(('['):rep(1001) .. (']'):rep(1001)))
      local v, _, code = json.decode(('['):rep(100000))
      assert.is_nil(v)
      assert.equal('EDEPTH', code)
      local deep = {}
      local t = deep
      for _ = 1, 1000 do t[1] = {}; t = t[1] end
      local _, err, c = json.encode(deep)
      assert.equal('EDEPTH', c)
      assert.matches('nested deeper than 1000 levels$', err)
    end)

    it('refuses text over max_bytes before reading it, and stops encoding once the output passes it', function()
      fails('ETOOBIG', 'args is 12 bytes, more than the limit of 10 bytes',
        json.decode('"0123456789"', { max_bytes = 10, name = 'args' }))
      fails('ETOOBIG', 'result is larger than the limit of 10 bytes as JSON text',
        json.encode({ 'aaaaaaaaaaaaaaaa' }, { max_bytes = 10, name = 'result' }))
      assert.equal('"01234567"', json.encode('01234567', { max_bytes = 10 }))
      -- a 300 MB string against a 16 MiB limit is refused (lua-cjson 2.1.0 crashed on such sizes)
      local big = ('x'):rep(300 * 1024 * 1024)
      local v, _, code = json.encode({ big }, { max_bytes = json.MAX_PAYLOAD })
      assert.is_nil(v)
      assert.equal('ETOOBIG', code)
    end)

    it('check_limit takes 1 byte to 512 MiB', function()
      assert.equal(16, json.check_limit(16, 'x'))
      assert.is_nil(json.check_limit(0, 'x'))
      assert.equal('--max-payload must be a whole number of bytes from 1 to 536870912 (512 MiB), got 1e+20',
        select(2, json.check_limit(1e20, '--max-payload')))
    end)
  end)

  describe('member', function()
    it("gives a member's text exactly as written", function()
      local line = '{"job":"send","args":{"n":1796046695261234,"l":[],"p":"a/b","s":"}]\\""} ,"id":"x"}'
      assert.equal('{"n":1796046695261234,"l":[],"p":"a/b","s":"}]\\""}', json.member(line, 'args'))
      assert.equal('"x"', json.member(line, 'id'))
      assert.is_nil(json.member(line, 'nope'))
      assert.equal('12.5e3', json.member('{ "args" : 12.5e3 }', 'args'))
      assert.equal('[]', json.member('{"\\u0061rgs":[]}', 'args'))
    end)
  end)

  describe('pretty', function()
    it('indents with sorted keys', function()
      assert.equal('{\n  "a": [\n    1,\n    2\n  ],\n  "b": {},\n  "c": []\n}',
        json.pretty({ c = json.array(), b = {}, a = { 1, 2 } }))
    end)
  end)
end)

describe('jobrt.json inside a finalizer', function()
  it('an encode run by a __gc during another encode leaves both intact', function()
    local json = require 'jobrt.json'
    local deep = {}
    local t = deep
    for i = 1, 300 do t.k = { v = 'level ' .. i, w = i }; t = t.k end
    local want = json.encode(deep, { sort = true })
    local nested, bad = 0, 0
    local pause = collectgarbage('setpause', 0)
    local stepmul = collectgarbage('setstepmul', 1000)
    collectgarbage()          -- a full cycle, so the next one starts at once (pause 0)
    local ok, err = pcall(function()
      for round = 1, 30 do
        for _ = 1, 200 do
          local p = newproxy(true)
          getmetatable(p).__gc = function()
            nested = nested + 1
            if json.encode({ a = { 1, 'x' } }) ~= '{"a":[1,"x"]}' then bad = bad + 1 end
          end
        end
        -- sorting keys pushes them on the stack (lua_pushlstring), and every push may run a
        -- step of the collector, which may run finalizers
        local co = coroutine.create(function() return json.encode(deep, { sort = true }) end)
        local _, text = coroutine.resume(co)
        if text ~= want then error('round ' .. round .. ': the outer encode was disturbed') end
      end
    end)
    collectgarbage('setpause', pause)
    collectgarbage('setstepmul', stepmul)
    assert(ok, err)
    assert.equal(0, bad)
    assert.is_true(nested > 0)
  end)
end)
