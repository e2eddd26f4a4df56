-- http.respond with headers longer than luaL_Buffer's 8 KiB: the header lines were built in a
-- luaL_Buffer while lua_next kept its key and value on the stack, so a flushed piece of the
-- buffer and the iteration's key were mixed up (found auditing runtime/*.c for Lua values used
-- across stack changes). Every header and the body must arrive intact.
local http = require 'jobrt.core.http'
local tcp = require 'jobrt.core.tcp'

describe('http.respond', function()
  it('sends long headers (over 8 KiB) and many headers intact', function()
    local long = ('v'):rep(20000)
    local hdrs = { ['X-Long'] = long, ['X-Num'] = 12345 }
    for i = 1, 50 do hdrs['X-H' .. i] = ('h'):rep(300) .. i end
    local srv = assert(http.listen{ host = '127.0.0.1', port = 0, handler = function(req)
      http.respond(req.handle, 200, hdrs, 'the body')
    end })
    local _, port = srv:address()
    local c = assert(tcp.connect('127.0.0.1', port))
    assert(c:write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'))
    local got = {}
    while true do
      local chunk = c:read(5)
      if not chunk then break end
      got[#got + 1] = chunk
    end
    c:close()
    srv:close()
    local text = table.concat(got)
    local head, body = text:match('^(.-)\r\n\r\n(.*)$')
    assert.equal('the body', body)
    local seen = {}
    for name, value in head:gmatch('\r\n([^:\r\n]+): ([^\r\n]*)') do seen[name] = value end
    assert.equal(long, seen['X-Long'])
    assert.equal('12345', seen['X-Num'])
    for i = 1, 50 do assert.equal(('h'):rep(300) .. i, seen['X-H' .. i]) end
    assert.equal('8', seen['Content-Length'])
  end)
end)
