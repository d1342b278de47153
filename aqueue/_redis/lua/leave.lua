-- A worker leaves: whatever is still pending for it (read but never run, or
-- not finished in the grace period) goes back into the stream at once, then
-- the consumer is deleted. Deleting a consumer that still holds entries would
-- orphan them, which is why this is one script.
-- Entries still run by a thread the worker can't stop (ARGV[4..]) are kept:
-- they stay leased to this consumer, which stays registered, until its
-- heartbeat is gone and other workers reclaim them as a dead worker's.
-- KEYS: stream, workers
-- ARGV: task_prefix, group, consumer, kept_entry...
-- Returns how many entries were handed back.
local stream, workers = KEYS[1], KEYS[2]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local kept = {}
events_from(2)
local argc = own_argc()
for i = 4, argc do kept[ARGV[i]] = true end
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
        redis.call('XADD', stream, '*', unpack(fields))
        for j = 1, #fields, 2 do
          if fields[j] == 'id' then
            local rec = prefix .. fields[j + 1]
            local st = redis.call('HGET', rec, 'state')
            if st == 'running' then
              redis.call('HSET', rec, 'state', 'queued')
              if EVENTS then emit(rec, fields[j + 1], 'queued', consumer, now_ms()) end
            end
          end
        end
        n = n + 1
      end
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
    end
  end
end
if argc < 4 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  redis.call('ZREM', workers, consumer)
end
flush_events()
return n
