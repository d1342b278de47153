-- Mark freshly delivered messages as running, or drop the ones aborted while
-- they waited and the ones refused at the door (see take_entry).
-- KEYS: stream, dead, outbox
-- ARGV: task_prefix, group, consumer, msgpack array of {entry_id, task_id},
--   max_deliveries, dead_maxlen, result_ttl_ms, done_channel
-- Returns per message its attempt number, 0 when it was aborted while it
-- waited, or the reason it was refused at the door and dead-lettered here
-- (either way acked, removed, not to run).
local stream = KEYS[1]
local q = {
  stream = stream, group = ARGV[2], consumer = ARGV[3], dead = KEYS[2], outbox = KEYS[3],
  prefix = ARGV[1], max_deliveries = tonumber(ARGV[5]), dead_maxlen = ARGV[6],
  ttl = tonumber(ARGV[7]), now = now_ms(), done = {},
}
local out = {}
for _, row in ipairs(cmsgpack.unpack(ARGV[4])) do
  -- The entry's own fields, not what the client read: the door checks them.
  local e = redis.call('XRANGE', stream, row[1], row[1])[1]
  if e then
    -- The delivery count of the group (a consumer's own lost read, claimed
    -- again, has more than one).
    local p = redis.call('XPENDING', stream, q.group, row[1], row[1], 1)
    local attempt, _, refused = take_entry(q, row[1], e[2], p[1] and p[1][4] or 1)
    out[#out + 1] = refused or attempt
  else
    out[#out + 1] = 0  -- deleted meanwhile (purged or aborted)
  end
end
if #q.done > 0 then redis.call('PUBLISH', ARGV[8], table.concat(q.done, '\n')) end
return out
