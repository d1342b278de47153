-- Move delayed tasks whose time has come into the stream, atomically, so any
-- number of workers may run this without duplicates.
-- KEYS: stream, delayed, delayed_payloads
-- ARGV: task_prefix, limit
-- Returns {moved, ms until the next delayed task is due or -1}.
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
events_from(3)
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
for _, tid in ipairs(due) do
  local payload = redis.call('HGET', payloads, tid)
  if payload then
    redis.call('XADD', stream, '*', 'id', tid, 'm', payload)
    redis.call('HSET', prefix .. tid, 'state', 'queued')
    if EVENTS then emit(prefix .. tid, tid, 'queued', '', now) end
    redis.call('HDEL', payloads, tid)
  end
  redis.call('ZREM', delayed, tid)
end
local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
flush_events()
return {#due, wait}
