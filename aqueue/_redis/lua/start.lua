-- Mark freshly delivered (or reclaimed) messages as running, or drop the ones
-- aborted while they waited.
-- KEYS: stream
-- ARGV: task_prefix, group, consumer, msgpack array of {entry_id, task_id}
-- Returns one attempt number per message; 0: it was aborted (acked and removed here).
local stream = KEYS[1]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
events_from(1)
local now = now_ms()
local out = {}
for _, row in ipairs(cmsgpack.unpack(ARGV[4])) do
  if row[2] == '' then
    out[#out + 1] = 1  -- no task id (garbage): it runs into the dead-letter path
  else
    local attempt = mark_started(stream, group, prefix .. row[2], row[1], consumer, now)
    if EVENTS and attempt > 0 then
      emit('', row[2], 'started', consumer, now, nil, false,
        STARTED_NAME, attempt, now)
    end
    out[#out + 1] = attempt
  end
end
flush_events()
return out
