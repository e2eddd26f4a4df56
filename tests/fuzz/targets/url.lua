-- Fuzz target url: the Redis URL parser (jobrt.redis: parse_url, address, the table form of
-- connect) on any text, as --redis and JOBRT_REDIS deliver it.
-- Invariants: nothing raises; an accepted URL gives a table a connection can use (a host and a
-- port 1-65535, or a socket path; whole db >= 0; strings where strings belong); a refusal is a
-- message that starts "bad redis URL" and names the fix.
local redis = require 'jobrt.redis'

local function check_table(url, t)
  assert(type(t) == 'table', 'parse_url returned ' .. type(t))
  if t.path ~= nil then
    assert(type(t.path) == 'string' and t.path:sub(1, 1) == '/', 'path must be absolute: ' .. tostring(t.path))
  elseif t.sentinels ~= nil then
    assert(type(t.sentinels) == 'table' and #t.sentinels > 0, 'no sentinels for ' .. url)
    for _, s in ipairs(t.sentinels) do
      assert(type(s.host) == 'string' and s.host ~= '', 'a sentinel without a host in ' .. url)
      assert(s.port == nil or (type(s.port) == 'number' and s.port >= 1 and s.port <= 65535), 'bad sentinel port')
    end
    assert(type(t.master_name) == 'string' and t.master_name ~= '', 'no primary name for ' .. url)
  else
    assert(type(t.host) == 'string' and t.host ~= '', 'no host for ' .. url)
    assert(type(t.port) == 'number' and t.port >= 1 and t.port <= 65535 and t.port == math.floor(t.port),
      'bad port ' .. tostring(t.port) .. ' for ' .. url)
  end
  if t.db ~= nil then
    assert(type(t.db) == 'number' and t.db >= 0 and t.db == math.floor(t.db), 'bad db ' .. tostring(t.db))
  end
  for _, k in ipairs({ 'password', 'user', 'username' }) do
    assert(t[k] == nil or type(t[k]) == 'string', k .. ' must be a string')
  end
end

return function(data)
  -- what the address is called in messages never shows a password
  local okd, shown = pcall(redis.describe, data)
  assert(okd, 'describe raised: ' .. tostring(shown))
  local okm, masked = pcall(redis.mask_url, data)
  assert(okm, 'mask_url raised: ' .. tostring(masked))
  local ok, t, err = pcall(redis.parse_url, data)
  assert(ok, 'parse_url raised: ' .. tostring(t))
  if t then
    check_table(data, t)
    local pw = t.password
    if type(pw) == 'string' and #pw >= 4 and not data:gsub(pw:gsub('%p', '%%%0'), '', 1):find(pw, 1, true) then
      -- the password's text may also be made of host names (sentinel lists gain ':26379'):
      -- it is a leak only when the same address with the password masked does not show it
      if shown:find(pw, 1, true) then
        assert(redis.describe(masked):find(pw, 1, true), 'describe shows the password: ' .. shown)
      end
    end
  else
    assert(type(err) == 'string' and err:find('bad redis URL', 1, true), 'refusal without a message: ' .. tostring(err))
  end
  local ok2, a, aerr = pcall(redis.address, data)
  assert(ok2, 'address raised: ' .. tostring(a))
  assert((a == data) == (t ~= nil), 'address and parse_url disagree')
  if a == false then assert(type(aerr) == 'string', 'address refused without a message') end
end
