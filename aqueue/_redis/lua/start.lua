-- Mark freshly delivered (or reclaimed) messages as running, or drop the ones
-- aborted while they waited.
-- KEYS: stream, outbox (workflows: where an aborted step's message goes)
-- ARGV: task_prefix, group, consumer, msgpack array of {entry_id, task_id}, or
--   {entry_id, task_id, limits length, payload length} for a first delivery with
--   limits (flow control), whose limits and payload follow each other in the blob;
--   blob
-- Returns one attempt number per message; 0: it was aborted (acked and removed here);
-- -1: it is over a rate or concurrency limit and waits in Redis (see _flow.lua).
local stream = KEYS[1]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local out = {}
local blob, pos = ARGV[5] or '', 1
local function admit_cut(row)
  local flow, payload
  flow, pos = cut(blob, pos, row[3])
  payload, pos = cut(blob, pos, row[4])
  return admit(stream, group, prefix, row[1], row[2], payload, flow, now)
end
for _, row in ipairs(cmsgpack.unpack(ARGV[4])) do
  if row[2] == '' then
    out[#out + 1] = 1  -- no task id (garbage): it runs into the dead-letter path
  elseif row[3] and not admit_cut(row) then
    out[#out + 1] = -1  -- flow control: over a limit, it waits in Redis
  else
    out[#out + 1] = mark_started(stream, group, prefix .. row[2], row[1], consumer, now, KEYS[2])
  end
end
return out
