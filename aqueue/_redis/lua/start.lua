-- Mark freshly delivered messages as running, or drop the ones aborted while
-- they waited and the ones refused at the door (see take_entry).
-- KEYS: stream, dead, outbox (workflows: where an aborted step's message goes)
-- ARGV: task_prefix, group, consumer, msgpack array of {entry_id, task_id}, or
--   {entry_id, task_id, limits length, payload length} for a first delivery with
--   limits (flow control), whose limits and payload follow each other in the blob;
--   max_deliveries, dead_maxlen, result_ttl_ms, done_channel, blob
-- Returns per message its attempt number, 0 when it was aborted while it
-- waited, -1 when it is over a rate or concurrency limit and waits in Redis
-- (see _flow.lua), or the reason it was refused at the door and dead-lettered
-- here (acked, removed, not to run).
local stream = KEYS[1]
local prefix, group = ARGV[1], ARGV[2]
local q = {
  stream = stream, group = group, consumer = ARGV[3], dead = KEYS[2], outbox = KEYS[3],
  prefix = prefix, max_deliveries = tonumber(ARGV[5]), dead_maxlen = ARGV[6],
  ttl = tonumber(ARGV[7]), now = now_ms(), done = {},
}
local now = q.now
events_from(3)
local out = {}
local blob, pos = ARGV[9] or '', 1
for _, row in ipairs(cmsgpack.unpack(ARGV[4])) do
  local flow, payload
  if row[3] then
    flow, pos = cut(blob, pos, row[3])
    payload, pos = cut(blob, pos, row[4])
  end
  -- The entry's own fields, not what the client read: the door checks them.
  local e = redis.call('XRANGE', stream, row[1], row[1])[1]
  if e then
    -- The delivery count of the group (a consumer's own lost read, claimed
    -- again, has more than one).
    local p = redis.call('XPENDING', stream, group, row[1], row[1], 1)
    local gate = nil
    if flow then
      gate = function() return admit(stream, group, prefix, row[1], row[2], payload, flow, now) end
    end
    local tid, message, _, before = entry_fields(e[2])
    local attempt, _, refused = take_entry(q, row[1], tid, message, before,
      p[1] and p[1][4] or 1, gate)
    if refused then
      out[#out + 1] = refused
    elseif attempt == -2 then
      out[#out + 1] = -1  -- flow control: over a limit, it waits in Redis
    else
      out[#out + 1] = attempt
      if EVENTS and attempt > 0 then
        emit_plain(row[2], STARTED_NAME, 'started', q.consumer, now, attempt, -1)
      end
      if attempt == 0 and flow then
        local ck = redis.call('HGET', prefix .. row[2], 'ck')
        if ck then release_token(stream, group, prefix, prefix .. row[2], row[2], ck, now) end
      end
    end
  else
    out[#out + 1] = 0  -- deleted meanwhile (purged or aborted)
  end
end
if #q.done > 0 then publish(ARGV[8], table.concat(q.done, '\n')) end
flush_events()
return out
