-- Move delayed tasks whose time has come into the stream, atomically, so any
-- number of workers may run this without duplicates.
-- KEYS: stream, delayed, delayed_payloads
-- ARGV: task_prefix, limit, group
-- Returns {moved, ms until the next delayed task is due or -1}.
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], ARGV[2]
events_from(3)
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', int_text(now), 'LIMIT', '0', limit)
for _, tid in ipairs(due) do
  local payload = redis.call('HGET', payloads, tid)
  if payload then
    -- flow control: a task keeps its priority and limits
    local rec = prefix .. tid
    local flow = redis.call('HMGET', rec, 'pri', 'f')
    local pri = tonumber(flow[1]) or 0
    redis.call('HSET', rec, 'state', 'queued')
    if pri > 0 then
      route(stream, ARGV[3], rec, tid, payload, pri, flow[2] or '')
    elseif flow[2] and flow[2] ~= '' then
      redis.call('XADD', stream, '*', 'id', tid, 'm', payload, 'f', flow[2])
    else
      redis.call('XADD', stream, '*', 'id', tid, 'm', payload)
    end
    if EVENTS then emit(rec, tid, 'queued', '', now) end
    redis.call('HDEL', payloads, tid)
  end
  redis.call('ZREM', delayed, tid)
end
-- flow control: tokens freed without a finish go to the tasks waiting for them
release_all_waiting(stream, ARGV[3], prefix, now)
local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
flush_events()
return {#due, wait}
