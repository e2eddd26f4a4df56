-- scripts.lua - builds the standalone server scripts from their sources (BullMQ's `@include`).
--
--   luajit tools/scripts.lua build DIR     write DIR/<name>.lua for every DIR/src/<name>.lua
--   luajit tools/scripts.lua check DIR     exit 1, naming each file, when a built script is
--                                          missing or differs from what build would write
--
-- A source is a complete script except that a line `--- @include "name"` stands for the file
-- DIR/includes/<name>.lua (which may include others; each is included once per script, where
-- it is first named). The built file is what Redis runs and what other languages read
-- (`redis-cli --eval lua-server-scripts/enqueue.lua ...`), so it is committed; its header
-- comment is the source's, followed by a line saying where it came from. Each script thus
-- carries only the helpers it uses, and they are written once.
local _M = {}

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- Drops the included helper functions a script never calls, so that it carries only what it
-- uses. A helper is a block that starts with `local function NAME(` at the start of a line
-- inside an included part and ends at the first line that is exactly `end` (or on that line
-- when it ends with `end`), with the comment lines right above it; it goes when NAME appears nowhere else. Repeats until nothing more
-- goes (a helper used only by a dropped one goes too).
function _M.shake(text)
  local lines = {}
  for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  if lines[#lines] == "" then lines[#lines] = nil end
  local changed = true
  while changed do
    changed = false
    local depth = 0          -- includes nest (args includes keys)
    local blocks = {}
    for i, l in ipairs(lines) do
      if l:match("^%-%- %-%-%-%- includes/") then depth = depth + 1
      elseif l:match("^%-%- %-%-%-%- end of includes/") then depth = depth - 1
      elseif depth > 0 then
        local fname = l:match("^local function ([%w_]+)%(")
        if fname then
          local j = i
          -- a one-line function ends on its own line
          if not l:match("%f[%w_]end%s*$") then
            while lines[j] and lines[j] ~= "end" do j = j + 1 end
          end
          local first = i
          while first > 1 and lines[first - 1]:match("^%-%-") and not lines[first - 1]:match("^%-%- %-%-%-%-") do
            first = first - 1
          end
          blocks[#blocks + 1] = { name = fname, from = first, def = i, to = j }
        end
      end
    end
    for b = #blocks, 1, -1 do
      local blk = blocks[b]
      local uses = 0
      for i, l in ipairs(lines) do
        if i < blk.def or i > blk.to then
          local code = l:gsub("%-%-.*$", "")
          for _ in code:gmatch("%f[%w_]" .. blk.name .. "%f[^%w_]") do uses = uses + 1 end
        end
      end
      if uses == 0 then
        for _ = blk.from, blk.to do table.remove(lines, blk.from) end
        changed = true
        break
      end
    end
  end
  return table.concat(lines, "\n")
end

-- The built text of DIR/src/<name>.lua, or nil, message.
function _M.expand(dir, name)
  local src, err = read(dir .. "/src/" .. name .. ".lua")
  if not src then return nil, err end
  local seen = {}
  local function expand(text, from)
    local out = {}
    for line in (text:gsub("\n$", "") .. "\n"):gmatch("(.-)\n") do
      local inc = line:match('^%-%-%- @include "([%w_]+)"%s*$')
      if inc then
        if not seen[inc] then
          seen[inc] = true
          local body, ierr = read(dir .. "/includes/" .. inc .. ".lua")
          if not body then error(("%s: @include \"%s\": %s"):format(from, inc, ierr), 0) end
          out[#out + 1] = ("-- ---- includes/%s.lua (edit it there, then run make) ----"):format(inc)
          out[#out + 1] = expand(body, "includes/" .. inc .. ".lua")
          out[#out + 1] = ("-- ---- end of includes/%s.lua ----"):format(inc)
        end
      elseif line:find("@include", 1, true) and line:match("^%-%-%-") then
        error(("%s: malformed include line %q: write --- @include \"name\""):format(from, line), 0)
      else
        out[#out + 1] = line
      end
    end
    return table.concat(out, "\n")
  end
  local ok, text = pcall(expand, src, "src/" .. name .. ".lua")
  if not ok then return nil, text end
  text = _M.shake(text)
  -- the line after the header comment says where the file comes from
  local hdr_end = text:find("\n]]\n", 1, true)
  if not hdr_end then return nil, "src/" .. name .. ".lua: must start with a --[[ header comment ]]" end
  return text:sub(1, hdr_end + 3) ..
    ("-- Built by tools/scripts.lua from src/%s.lua and includes/: edit those, then run make.\n"):format(name) ..
    text:sub(hdr_end + 4) .. "\n"
end

-- The script names: one per DIR/src/*.lua, sorted.
function _M.names(dir)
  local p = io.popen("ls '" .. dir .. "/src'")
  local names = {}
  for f in p:lines() do
    local n = f:match("^([%w_]+)%.lua$")
    if n then names[#names + 1] = n end
  end
  p:close()
  table.sort(names)
  return names
end

-- Files of DIR whose content differs from what build writes: { {name=, why=} ... }.
function _M.stale(dir)
  local out = {}
  for _, n in ipairs(_M.names(dir)) do
    local want, err = _M.expand(dir, n)
    if not want then
      out[#out + 1] = { name = n, why = err }
    else
      local have = read(dir .. "/" .. n .. ".lua")
      if have ~= want then
        out[#out + 1] = { name = n, why = have and "out of date" or "missing" }
      end
    end
  end
  return out
end

if arg and arg[0] and arg[0]:match("scripts%.lua$") and (arg[1] == "build" or arg[1] == "check") then
  local dir = arg[2] or "lua-server-scripts"
  if arg[1] == "build" then
    for _, n in ipairs(_M.names(dir)) do
      local text, err = _M.expand(dir, n)
      if not text then io.stderr:write("tools/scripts.lua: ", err, "\n"); os.exit(1) end
      local path = dir .. "/" .. n .. ".lua"
      if read(path) ~= text then
        local f = assert(io.open(path, "wb"))
        f:write(text)
        f:close()
        io.stdout:write("built ", path, "\n")
      end
    end
  else
    local bad = _M.stale(dir)
    for _, b in ipairs(bad) do
      io.stderr:write(("%s/%s.lua: %s (run make to rebuild it from src/%s.lua)\n"):format(dir, b.name, b.why, b.name))
    end
    os.exit(#bad == 0 and 0 or 1)
  end
end

return _M
