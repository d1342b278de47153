-- Enqueue a batch of messages into one queue, atomically.
-- KEYS: stream, delayed, delayed_payloads
-- ARGV: task_prefix, control_channel, rows, blob of payloads, group; rows is one
--   flat array of ROW values per message (no table per message to build):
--   task_id, task_name, payload length, fresh (1: replace any old record),
--   delay_ms (0: now), unique_key ('' for none), unique_ttl_ms,
--   priority (0-9), limits length (their bytes follow the payload; see _flow.lua)
-- Returns the messages that another task now represents, as a flat list of
-- (position in the batch from 1, that task's id): the live task already holding
-- the message's unique key. Every other message is its own task (also when it
-- was already enqueued, which adds nothing: already_enqueued), so a batch
-- without unique keys gets an empty reply, whatever its size.
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, control = ARGV[1], ARGV[2]
events_from(3)
local wake = false
local rows, blob, pos = cmsgpack.unpack(ARGV[3]), ARGV[4], 1
local ROW = 9
-- "Now" in ms, read once; the records get its text. A lone message without
-- delay, priority or limits (events off) does without: enqueue_one takes the
-- time of its stream entry, which spares a lone enqueue() the TIME call.
local now = known_now()
if not now and (EVENTS or #rows ~= ROW or rows[5] > 0 or rows[8] > 0 or rows[9] > 0) then
  now = now_ms()
end
local now_text = now and string.format('%d', now)
local out = {}
for at = 0, #rows - 1, ROW do
  local tid, name, len = rows[at + 1], rows[at + 2], rows[at + 3]
  local payload = string.sub(blob, pos, pos + len - 1)
  pos = pos + len
  local fresh, delay, ukey = rows[at + 4] == 1, rows[at + 5], rows[at + 6]
  local pri, flow_len = rows[at + 8], rows[at + 9]
  local owner = ukey ~= '' and live_owner(prefix, ukey)
  if owner then
    out[#out + 1] = at / ROW + 1
    out[#out + 1] = owner
  elseif not already_enqueued(prefix .. tid, fresh, payload) then
    local earliest
    if pri == 0 and flow_len == 0 then
      earliest = enqueue_one(stream, delayed, payloads, prefix, tid, name, payload, fresh,
        delay, ukey, rows[at + 7], now_text)
    else
      -- Flow control: the limits follow the payload.
      local flow = string.sub(blob, pos, pos + flow_len - 1)
      earliest = enqueue_flow(stream, delayed, payloads, prefix, tid, name, payload, fresh,
        delay, ukey, rows[at + 7], now_text, pri, flow, ARGV[5])
    end
    if earliest then wake = true end
    if fresh then mark_enqueued_by(prefix .. tid, payload) end
    if EVENTS then
      emit_plain(tid, name, delay > 0 and 'scheduled' or 'queued', '', now, 0, -1)
    end
  end
  pos = pos + flow_len
end
-- Workers sleep until the earliest due time; a new earliest one wakes them.
if wake then publish(control, 'delayed') end
flush_events()
return out
