-- tests/07-web/webclient.lua: start `jobrt web` for a spec and talk HTTP to it byte for byte
-- (over jobrt.core.tcp), so specs can send malformed, oversized and slow requests too.
--   local w = web.start({ "--token", T }, { env = {...} })   -- w.port, w.p (process), w:stop()
--   local status, headers, body, json = web.request(w.port, "POST", "/api/...", { body = tbl|str,
--                                                   headers = { Authorization = ... } })
--   local text = web.raw(w.port, bytes[, timeout])   -- whatever the server answers, until it closes
local h = require 'tests.helpers'
local tcp = require 'jobrt.core.tcp'
local cjson = require 'cjson'

local M = {}

local W = {}
W.__index = W

function M.start(args, opts)
  opts = opts or {}
  local argv = { "web", "--listen", "127.0.0.1:0", "--redis", opts.redis or h.url }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local p = h.spawn_jobrt(argv, { env = opts.env })
  local port = h.wait_for(function()
    if p:exited() then
      local out, err = p:output()
      error("jobrt web exited: " .. tostring(err) .. tostring(out))
    end
    local _, err = p:output()
    return tonumber(err:match("serving http://127%.0%.0%.1:(%d+)/"))
  end, 10, "jobrt web to listen")
  return setmetatable({ p = p, port = port }, W)
end

-- SIGTERM; returns the exit status.
function W:stop()
  self.p:kill("SIGTERM")
  return self.p:wait()
end

-- Is text one whole response (headers, and Content-Length bytes of body)?
local function complete(text)
  local head, body = text:match("^(.-\r\n)\r\n(.*)$")
  if not head then return false end
  if head:find("^HTTP/1%.1 1%d%d") then return complete(body) end
  local len = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)"))
  return len ~= nil and #body >= len
end

-- Sends bytes and reads until the server closes (or `timeout` seconds pass: then nil, "timeout").
-- With `one`, stops after one whole response (for servers that keep the connection open).
function M.raw(port, bytes, timeout, one)
  local c = assert(tcp.connect("127.0.0.1", port))
  if bytes and bytes ~= "" then assert(c:write(bytes)) end
  local parts = {}
  local deadline = require('jobrt').monotime() + (timeout or 30)
  while true do
    local left = deadline - require('jobrt').monotime()
    if left <= 0 then c:close(); return nil, "timeout", table.concat(parts) end
    local d, err = c:read(left)
    if not d then
      c:close()
      if err == "ETIMEDOUT" then return nil, "timeout", table.concat(parts) end
      return table.concat(parts)
    end
    parts[#parts + 1] = d
    if one and complete(table.concat(parts)) then
      c:close()
      return table.concat(parts)
    end
  end
end

-- Splits one response: status, headers (lower-case names), body.
function M.parse(text)
  local head, body = text:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no complete response in: " .. text:sub(1, 200))
  local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)"))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  return status, headers, body
end

function M.request(port, method, path, opts)
  opts = opts or {}
  local body = opts.body
  if type(body) == "table" then body = cjson.encode(body) end
  local lines = { ("%s %s HTTP/1.1"):format(method, path), "Host: " .. (opts.host or ("127.0.0.1:" .. port)),
                  "Connection: close" }
  for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  local text, err = M.raw(port, table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""), opts.timeout, true)
  assert(text, "no answer: " .. tostring(err))
  local status, headers, rbody = M.parse(text)
  local ok, decoded = false, nil
  if (headers["content-type"] or ""):find("application/json", 1, true) then
    ok, decoded = pcall(cjson.decode, rbody)
  end
  return status, headers, rbody, ok and decoded or nil
end

-- The Debian python3 (its packages, such as python3-prometheus-client, live there).
do
  local f = io.open("/usr/bin/python3")
  M.python = f and "/usr/bin/python3" or "python3"
  if f then f:close() end
end

return M
