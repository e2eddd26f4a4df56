-- tests/output.lua: busted output = the usual terminal output, then one
-- closing line "N passed, N failed[, N skipped]" that CI reads.
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.utfTerminal'(options)
  local passed, failed, skipped = 0, 0, 0
  busted.subscribe({ 'test', 'end' }, function(element, parent, status)
    if status == 'success' then passed = passed + 1
    elseif status == 'pending' then skipped = skipped + 1
    else failed = failed + 1 end
    return nil, true
  end)
  busted.subscribe({ 'error', 'file' }, function() failed = failed + 1; return nil, true end)
  busted.subscribe({ 'failure', 'file' }, function() failed = failed + 1; return nil, true end)
  -- a setup/teardown that fails (its tests never run) counts too: busted publishes those
  -- under the block's own descriptor
  for _, d in ipairs({ 'describe', 'setup', 'teardown', 'lazy_setup', 'lazy_teardown', 'strict_setup',
                       'strict_teardown', 'before_each', 'after_each' }) do
    busted.subscribe({ 'error', d }, function() failed = failed + 1; return nil, true end)
    busted.subscribe({ 'failure', d }, function() failed = failed + 1; return nil, true end)
  end
  busted.subscribe({ 'exit' }, function()
    _G.JOBRT_TEST_SUMMARY = { passed = passed, failed = failed, skipped = skipped }
    return nil, true
  end)
  return handler
end
