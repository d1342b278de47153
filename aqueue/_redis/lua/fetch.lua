-- Read up to `count` new entries without blocking and mark them running, in
-- one round trip. When it returns nothing the worker falls back to a blocking
-- XREADGROUP (scripts can't block). Entries refused at the door (see
-- take_entry) are dead-lettered here and not returned.
-- KEYS: stream, dead, outbox
-- ARGV: task_prefix, group, consumer, count, max_deliveries, dead_maxlen,
--   result_ttl_ms, done_channel
-- Returns a flat list: entry_id, task_id, payload, attempt for each entry to
-- run, and entry_id, task_id, reason, -1 for each one refused at the door.
local stream = KEYS[1]
local prefix, group, consumer, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count,
  'STREAMS', stream, '>')
local out = {}
if not reply then return out end
local q = {
  stream = stream, group = group, consumer = consumer, dead = KEYS[2], outbox = KEYS[3],
  prefix = prefix, max_deliveries = tonumber(ARGV[5]), dead_maxlen = ARGV[6],
  ttl = tonumber(ARGV[7]), now = now_ms(), done = {},
}
for _, e in ipairs(reply[1][2]) do
  local entry, fields = e[1], e[2]
  local attempt, _, refused = take_entry(q, entry, fields, 1)
  local tid, payload = entry_fields(fields)
  if attempt > 0 then
    out[#out + 1] = entry
    out[#out + 1] = tid
    out[#out + 1] = payload
    out[#out + 1] = attempt
  elseif refused then
    -- Dead-lettered here: the worker logs it (the reason in place of the message).
    out[#out + 1] = entry
    out[#out + 1] = refused == 'bad_task_id' and '' or tid
    out[#out + 1] = refused
    out[#out + 1] = -1
  end
end
if #q.done > 0 then redis.call('PUBLISH', ARGV[8], table.concat(q.done, '\n')) end
return out
