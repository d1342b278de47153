-- Enqueue a batch of messages into one queue, atomically.
-- KEYS: stream, delayed, delayed_payloads
-- ARGV: task_prefix, control_channel, rows, blob of payloads, group; a row per message:
--   {task_id, task_name, payload length, fresh (1: replace any old record),
--    delay_ms (0: now), unique_key ('' for none), unique_ttl_ms,
--    priority (0-9), limits length (their bytes follow the payload; see _flow.lua)}
-- Returns, per message, the id of the task that now represents it: its own
-- id, or the id of the live task already holding its unique key. A message
-- whose task is already enqueued is not added again (already_enqueued).
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, control = ARGV[1], ARGV[2]
events_from(3)
local wake = false
local now = now_ms()
local rows, blob, pos = cmsgpack.unpack(ARGV[3]), ARGV[4], 1
local out = {}
for _, row in ipairs(rows) do
  local tid, name, payload = row[1], row[2], nil
  payload, pos = cut(blob, pos, row[3])
  local fresh, delay, ukey, uttl = row[4], row[5], row[6], row[7]
  local owner = ukey ~= '' and live_owner(prefix, ukey)
  if owner then
    out[#out + 1] = owner
  elseif already_enqueued(prefix .. tid, fresh == 1, payload) then
    out[#out + 1] = tid
  else
    local pri, flow = row[8] or 0, ''  -- flow control: limits follow the payload
    if row[9] then flow, pos = cut(blob, pos, row[9]) end
    local earliest
    if pri == 0 and flow == '' then
      earliest = enqueue_one(stream, delayed, payloads, prefix, tid, name, payload, fresh == 1,
        delay, ukey, uttl, now)
    else
      earliest = enqueue_flow(stream, delayed, payloads, prefix, tid, name, payload, fresh == 1,
        delay, ukey, uttl, now, pri, flow, ARGV[5])
    end
    if earliest then wake = true end
    if fresh == 1 then mark_enqueued_by(prefix .. tid, payload) end
    if EVENTS then
      emit('', tid, delay > 0 and 'scheduled' or 'queued', '', now, nil, false, name, 0, false)
    end
    out[#out + 1] = tid
  end
end
-- Workers sleep until the earliest due time; a new earliest one wakes them.
if wake then publish(control, 'delayed') end
flush_events()
return out
