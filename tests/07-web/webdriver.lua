-- tests/07-web/webdriver.lua: Debian's chromium, headless, driven by chromedriver over the W3C
-- WebDriver protocol (JSON over HTTP, spoken with tests/07-web/webclient.lua).
--   local b = webdriver.start{ artifacts = dir }     -- b:go(url), b:js(script, ...) -> value,
--   b:click(css), b:type(css, text), b:size(w, h), b:screenshot(path), b:console_errors(), b:quit()
local jobrt = require 'jobrt'
local cjson = require 'cjson'
local proc = require 'jobrt.core.proc'
local h = require 'tests.helpers'
local web = require 'tests.07-web.webclient'

local M = {}
local B = {}
B.__index = B

local ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

local jweb = require 'jobrt.web'

local function call(port, method, path, body)
  local st, _, raw, dec = web.request(port, method, path, { body = body and jweb.encode(body) or (method == "POST" and "{}" or nil),
    headers = { ["Content-Type"] = "application/json" }, timeout = 60 })
  local ok, v = pcall(cjson.decode, raw)
  dec = dec or (ok and v) or nil
  if st ~= 200 then
    error(("webdriver %s %s: HTTP %s: %s"):format(method, path, tostring(st), raw:sub(1, 500)), 2)
  end
  return dec and dec.value
end

function M.start()
  local port
  local p
  for _ = 1, 20 do
    port = math.random(20000, 59999)
    p = assert(proc.spawn{ file = "chromedriver", args = { "chromedriver", "--port=" .. port }, capture = true })
    h.spawned[p] = "chromedriver --port=" .. port
    local up = pcall(h.wait_for, function()
      if p:exited() then return "exited" end
      local ok, st = pcall(web.request, port, "GET", "/status", { timeout = 2 })
      return ok and st == 200
    end, 10, "chromedriver")
    if up and not p:exited() then break end
    p:kill("SIGKILL")
    p:wait()
    p = nil
  end
  assert(p, "chromedriver did not start")
  local profile = h.tmpdir()
  local session = call(port, "POST", "/session", { capabilities = { alwaysMatch = {
    browserName = "chrome",
    ["goog:chromeOptions"] = { binary = "/usr/bin/chromium", args = {
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage", "--user-data-dir=" .. profile, "--window-size=1280,900" } },
    ["goog:loggingPrefs"] = { browser = "ALL" },
  } } })
  return setmetatable({ p = p, port = port, id = session.sessionId, profile = profile }, B)
end

function B:cmd(method, path, body)
  return call(self.port, method, "/session/" .. self.id .. path, body)
end

function B:go(url) return self:cmd("POST", "/url", { url = url }) end

function B:js(script, ...)
  return self:cmd("POST", "/execute/sync", { script = script, args = jweb.array({ ... }) })
end

-- Waits until script (returning a truthy value) holds in the page.
function B:until_js(script, timeout, what)
  return h.wait_for(function() return self:js(script) end, timeout or 10, what or script)
end

function B:find(css)
  local e = self:cmd("POST", "/element", { using = "css selector", value = css })
  return e[ELEMENT]
end

function B:click(css) return self:cmd("POST", "/element/" .. self:find(css) .. "/click") end
function B:type(css, text) return self:cmd("POST", "/element/" .. self:find(css) .. "/value", { text = text }) end
function B:size(w, hgt) return self:cmd("POST", "/window/rect", { width = w, height = hgt }) end

function B:screenshot(path)
  local b64 = self:cmd("GET", "/screenshot")
  local tmp = path .. ".b64"
  local f = assert(io.open(tmp, "wb"))
  f:write(b64)
  f:close()
  assert(os.execute(("base64 -d '%s' > '%s' && rm -f '%s'"):format(tmp, path, tmp)) == 0)
end

-- Console messages at level SEVERE since the last call (page errors, failed loads, CSP).
function B:console_errors()
  local entries = self:cmd("POST", "/se/log", { type = "browser" })
  local errs = {}
  for _, e in ipairs(entries or {}) do
    if e.level == "SEVERE" then errs[#errs + 1] = e.message end
  end
  return errs
end

function B:quit()
  pcall(self.cmd, self, "DELETE", "")
  self.p:kill("SIGTERM")
  self.p:wait()
  os.execute("rm -rf '" .. self.profile .. "'")
end

return M
