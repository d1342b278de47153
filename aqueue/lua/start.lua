-- Mark freshly delivered messages as running, or drop the ones aborted while queued.
-- KEYS: stream
-- ARGV: task_prefix, group, consumer, then 3 per message: entry_id, task_id, attempt
-- Returns one flag per message: 1 run it, 0 it was aborted (acked and removed here).
local stream = KEYS[1]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 4, #ARGV, 3 do
  local entry, tid, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rec = prefix .. tid
  if redis.call('HGET', rec, 'state') == 'aborted' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    out[#out + 1] = 0
  else
    redis.call('HSET', rec, 'state', 'running', 'started', now, 'worker', consumer,
      'attempt', attempt, 'entry', entry)
    out[#out + 1] = 1
  end
end
return out
