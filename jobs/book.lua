-- jobs/book.lua: a flow (README "Flows"). PAGES renders pages; BOOK assembles them once every
-- page has finished, from their results (job.children). Enqueue the whole tree at once:
--   jobrt enqueue BOOK assemble '{"title":"Lua"}' --flow pages.json --wait
-- with pages.json: [{"queue":"PAGES","job":"render","args":{"page":1,"text":"..."}}, ...]
return {
  PAGES = {
    _type = "QUEUE",
    render = function(args, job)
      if type(args.page) ~= "number" then error("render: args.page must be a page number", 0) end
      local words = 0
      for _ in tostring(args.text or ""):gmatch("%S+") do words = words + 1 end
      return { page = args.page, words = words }
    end,
  },
  BOOK = {
    _type = "QUEUE",
    -- runs after all its children (the pages); each child's outcome is in job.children
    assemble = function(args, job)
      local pages, words, missing = {}, 0, {}
      for _, child in ipairs(job.children) do
        if child.state == "successful" then
          pages[#pages + 1] = child.result.page
          words = words + child.result.words
        else                                   -- a page with ignoreFailure that failed
          missing[#missing + 1] = child.id .. ": " .. tostring(child.error or child.state)
        end
      end
      return { title = args.title, pages = pages, words = words, missing = missing }
    end,
  },
}
