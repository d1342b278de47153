-- A worker leaves: whatever is still pending for it (read but never run, or
-- not finished in the grace period) goes back into the stream at once, then
-- the consumer is deleted. Deleting a consumer that still holds entries would
-- orphan them, which is why this is one script.
-- A handed-back entry is a new stream entry, so it carries the deliveries of
-- the old one in its 'd' field: a message that crashes or stops every worker
-- that reads it still reaches max_deliveries. Entries listed as waiting (read
-- ahead, decoded, never begun) carry one delivery less: they did no harm.
-- Entries still run by a thread the worker can't stop are kept: they stay
-- leased to this consumer, which stays registered, until its heartbeat is
-- gone and other workers reclaim them as a dead worker's.
-- KEYS: stream, workers
-- ARGV: task_prefix, group, consumer, kept_entry..., ['--waiting', waiting_entry...]
-- Returns how many entries were handed back.
local stream, workers = KEYS[1], KEYS[2]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local kept, waiting = {}, {}
local nkept, into = 0, kept
events_from(2)
for i = 4, own_argc() do
  if ARGV[i] == '--waiting' then
    into = waiting
  else
    into[ARGV[i]] = true
    if into == kept then nkept = nkept + 1 end
  end
end
local n = 0
local start = '-'
while true do
  local pending = redis.call('XPENDING', stream, group, start, '+', 100, consumer)
  if #pending == 0 then break end
  for _, p in ipairs(pending) do
    local entry = p[1]
    start = '(' .. entry
    if not kept[entry] then
      local e = redis.call('XRANGE', stream, entry, entry)
      if e[1] then
        local fields = e[1][2]
        local tid, _, _, before = entry_fields(fields)
        local carried = before + p[4]
        if waiting[entry] then carried = carried - 1 end
        -- The same fields (limits included), with the deliveries carried.
        local copy = {}
        for j = 1, #fields, 2 do
          if fields[j] ~= 'd' then
            copy[#copy + 1] = fields[j]
            copy[#copy + 1] = fields[j + 1]
          end
        end
        if carried > 0 then
          copy[#copy + 1] = 'd'
          copy[#copy + 1] = carried
        end
        redis.call('XADD', stream, '*', unpack(copy))
        if tid ~= '' then
          local rec = prefix .. tid
          local st = redis.call('HGET', rec, 'state')
          if st == 'running' then
            redis.call('HSET', rec, 'state', 'queued')
            if EVENTS then emit(rec, tid, 'queued', consumer, now_ms()) end
          end
        end
        n = n + 1
      end
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
    end
  end
end
-- flow control: urgent entries too
n = n + hand_back_urgent(stream, group, consumer, prefix, kept, nkept == 0)
if nkept == 0 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  redis.call('ZREM', workers, consumer)
end
flush_events()
return n
