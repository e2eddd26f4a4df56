--[[ get.lua: read one job record by id.

KEYS: the 14 standard keys of queue Q, in order (README "Keys").
ARGV:
  [1] type  QUEUE | LBQUEUE | DELQUEUE
  [2] id    job id
Returns: the record as a flat array field1, value1, field2, value2, ... (README "Job record"),
  or an empty array when there is no such job (never enqueued, deleted, or expired) or when
  the job was deleted while executing (field cancelled set: it is still stopping on its worker).
  Equivalent to HGETALL jobrt:{Q}:job:<id> (treating a record with a cancelled field as none),
  which other languages may use directly, plus the fields id and queue, which the key holds
  and the record does not store.
]]
local SCRIPT = 'get'
--- @include "args"
--- @include "record"

local qname, err = check_keys()
if not qname then return redis.error_reply(err) end
err = max_argv(2); if err then return redis.error_reply(err) end
local qtype, jid
qtype, err = queue_type(); if err then return redis.error_reply(err) end
jid, err = name_arg(2, 'id', 256, true); if err then return redis.error_reply(err) end
if redis.call('HEXISTS', KEYS[1] .. jid, 'cancelled') == 1 then return {} end
return with_key_fields(redis.call('HGETALL', KEYS[1] .. jid), jid, qname)
