-- Read up to `count` new entries without blocking and mark them running, in
-- one round trip. When it returns nothing the worker falls back to a blocking
-- XREADGROUP (scripts can't block).
-- KEYS: stream
-- ARGV: task_prefix, group, consumer, count
-- Returns a flat list: entry_id, task_id, payload, attempt for each entry to run.
local stream = KEYS[1]
local prefix, group, consumer, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
events_from(1)
local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count,
  'STREAMS', stream, '>')
local out = {}
if not reply then return out end
local now = now_ms()
for _, e in ipairs(reply[1][2]) do
  local entry, fields = e[1], e[2]
  local tid, payload = entry_fields(fields)
  local attempt = 1
  if tid ~= '' then
    attempt = mark_started(stream, group, prefix .. tid, entry, consumer, now)
    if EVENTS and attempt > 0 then
      emit('', tid, 'started', consumer, now, nil, false, STARTED_NAME, attempt, now)
    end
  end
  if attempt > 0 then
    out[#out + 1] = entry
    out[#out + 1] = tid
    out[#out + 1] = payload
    out[#out + 1] = attempt
  end
end
flush_events()
return out
