-- jobrt.flow_commands: `jobrt enqueue ... --flow FILE.json` (README "Flows"), called by
-- jobrt.commands' enqueue when --flow is given.
--
--   flow_commands.enqueue(o, pos, cmd, util) -> exit status
--       o, pos: the parsed options and words of `jobrt enqueue`; util: jobrt.commands' helpers.
--   Two forms:
--     jobrt enqueue --flow FILE.json            FILE is the whole flow: a JSON object
--                                               {"queue":..., "job":..., "args":..., "opts":{...},
--                                                "children":[ nodes ], "ignoreFailure": true}
--     jobrt enqueue QUEUE JOB [JSON-ARGS] [--id ID ...] --flow FILE.json
--                                               the root from the command line, FILE its
--                                               children: a JSON array of nodes
--   FILE - reads stdin. Prints the root's id; --wait waits for the root's result as
--   `enqueue --wait` does. 0 enqueued (or succeeded), 1 failed, 2 usage error (a malformed
--   file or node included: the message names the node, e.g. children[2].children[1]).
local client = require 'jobrt.client'
local term = require 'jobrt.core.term'
local json = require 'jobrt.json'

local io, type, pairs, ipairs, next, tostring, pcall = io, type, pairs, ipairs, next, tostring, pcall
local str_format, concat = string.format, table.concat

local NULL = json.null

local _M = {}

local function read_file(path)
  if path == '-' then
    local lines = {}
    while true do
      local l = term.read_line()
      if l == nil then break end
      lines[#lines + 1] = l
    end
    return concat(lines, '\n')
  end
  local f, err = io.open(path, 'rb')
  if not f then return nil, err end
  local text = f:read('*a')
  f:close()
  return text
end

-- JSON null in a file means "not given" for opts, children and ignoreFailure (and null args
-- for args); the nodes below are cleaned the same way, and anything else stays for
-- enqueueFlow to check
local function clean(node)
  if type(node) ~= 'table' then return node end
  local out = {}
  for k, v in pairs(node) do
    if v ~= NULL or k == 'args' then out[k] = v end
  end
  if type(out.children) == 'table' then
    local kids = {}
    for k, c in pairs(out.children) do kids[k] = clean(c) end
    out.children = kids
  end
  return out
end

local function count(node)
  local n, queues = 0, {}
  local function walk(t)
    n = n + 1
    queues[t.queue] = true
    for _, c in ipairs(t.children) do walk(c) end
  end
  walk(node)
  local names = {}
  for q in pairs(queues) do names[#names + 1] = q end
  table.sort(names)
  return n, names
end

function _M.enqueue(o, pos, cmd, util)
  local errline, bare = util.errline, util.bare
  if o.hash then
    errline(cmd, '--hash does not apply to a flow: each job of a flow is its own job, never merged with another')
    return 2
  end
  local text, ferr = read_file(o.flow)
  if not text then
    errline(cmd, str_format("cannot read the flow file %s: %s", o.flow, tostring(ferr)))
    return 2
  end
  local v, jerr, jcode = json.decode(text)
  if v == nil then
    errline(cmd, util.json_problem('the flow file ' .. o.flow, jerr, jcode))
    return 2
  end
  local node
  if pos[1] then
    local queue, job, args_text = pos[1], pos[2], pos[3]
    if not job then return util.missing(cmd, 'JOB', 'QUEUE JOB [JSON-ARGS] --flow FILE.json') end
    if pos[4] then return util.too_many(cmd, pos[4]) end
    if type(v) ~= 'table' or (next(v) ~= nil and #v == 0) then
      errline(cmd, str_format('with QUEUE and JOB on the command line, the flow file %s must be a JSON array of the children, e.g. [{"queue":"pages","job":"render","args":{"page":1}}]', o.flow))
      return 2
    end
    local args = {}
    if args_text then
      local a, aerr, acode = json.decode(args_text)
      if a == nil then
        errline(cmd, util.json_problem('JSON-ARGS', aerr, acode) .. (acode == 'EJSON' and util.QUOTE_HINT or ''))
        return 2
      end
      args = a
    end
    local kids = {}
    for i, c in ipairs(v) do kids[i] = clean(c) end
    node = { queue = queue, job = job, args = args, opts = util.cli_opts(o), children = kids }
  else
    if type(v) ~= 'table' or #v > 0 then
      errline(cmd, str_format('the flow file %s must be a JSON object (the root job) {"queue":...,"job":...,"args":...,"children":[...]}, or give QUEUE and JOB before --flow and list the children in the file', o.flow))
      return 2
    end
    for k in pairs(util.cli_opts(o)) do
      errline(cmd, str_format('%s applies to the root job: put it in the flow file ("opts") or give QUEUE and JOB on the command line', util.flag_of(k)))
      return 2
    end
    node = clean(v)
  end
  local okc, checked = pcall(client.check_flow, node, o['max-payload'])
  if not okc then
    -- the root's options came from the command line (say --in, not delay); a child's from the file
    local msg = bare(checked)
    errline(cmd, (pos[1] and not msg:find('^children%[')) and util.cli_words(msg) or msg)
    return 2
  end
  local q, qcode = util.connect(cmd, o)
  if not q then return qcode end
  local oke, id, tree = pcall(q.enqueueFlow, q, node)
  if not oke then
    q:close()
    errline(cmd, util.cli_words(bare(id)))
    return 1
  end
  local n, queues = count(checked)
  if tree.existed then
    errline(cmd, str_format("job %s is already waiting or running in queue '%s'; the flow was not enqueued twice", id, node.queue))
  else
    errline(cmd, str_format("enqueued a flow of %d job%s (queues %s); its root is job %s of queue '%s'", n,
      n == 1 and '' or 's', concat(queues, ', '), id, node.queue))
  end
  if not o.wait then
    q:close()
    io.stdout:write(tostring(id), '\n')
    return 0
  end
  local okw, rec = pcall(client.wait_record, q, 'enqueue', node.queue, id, o['wait-timeout'])
  q:close()
  if not okw then
    errline(cmd, bare(rec))
    return 1
  end
  if rec == false then
    errline(cmd, str_format("job %s in queue '%s' was deleted before it finished", id, node.queue))
    return 1
  end
  if rec.result == 'successful' then
    local val = rec['result-value']
    if val == nil or val == NULL or val == '' then val = 'null' end
    io.stdout:write(val, '\n')
    return 0
  end
  local _, msg = client.outcome(node.queue, id, rec)
  errline(cmd, msg)
  return 1
end

return _M
