-- Reading a job record (README "Job record"): the key holds the job's id and queue, so new
-- records do not store them, and a job not handed out yet has no attempts field; readers
-- answer them beside the stored fields.
-- with_key_fields(flat, jid, qname) -> the HGETALL reply flat, with id, queue and attempts 0
-- appended when the record does not hold them (records written before they were dropped
-- do); {} stays {}.
local function with_key_fields(flat, jid, qname)
  if #flat == 0 then return flat end
  local has_id, has_queue, has_attempts = false, false, false
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == 'id' then has_id = true elseif f == 'queue' then has_queue = true
    elseif f == 'attempts' then has_attempts = true end
  end
  if not has_id then flat[#flat + 1] = 'id'; flat[#flat + 1] = jid end
  if not has_queue then flat[#flat + 1] = 'queue'; flat[#flat + 1] = qname end
  if not has_attempts then flat[#flat + 1] = 'attempts'; flat[#flat + 1] = '0' end
  return flat
end
