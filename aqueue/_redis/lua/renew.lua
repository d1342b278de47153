-- Heartbeat this worker and extend the leases of the entries it is running.
-- KEYS: stream, workers
-- ARGV: group, consumer, task_prefix, lease_ms, then entry_id, task_id pairs
-- Returns {lost, aborted}: entries this consumer no longer owns (reclaimed
-- elsewhere; their outcome would be fenced off, so the worker stops them) and
-- entries whose task was asked to abort (in case the push was missed).
-- A running unique task's key is kept alive for at least one more lease.
local stream, workers = KEYS[1], KEYS[2]
local group, consumer, prefix, lease = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
redis.call('ZADD', workers, now, consumer)
local lost, aborted = {}, {}
for i = 5, #ARGV, 2 do
  local entry = ARGV[i]
  local estream = stream_of(stream, entry)  -- flow control: urgent entries
  if #redis.call('XPENDING', estream, group, entry, entry, 1, consumer) == 1 then
    -- JUSTID: resets the idle time without counting another delivery.
    redis.call('XCLAIM', estream, group, consumer, 0, entry, 'JUSTID')
    local tid = ARGV[i + 1]
    local seen = redis.call('HMGET', prefix .. tid, 'abort', 'ukey')
    if seen[1] then
      aborted[#aborted + 1] = entry
    end
    local ukey = seen[2]
    if ukey and redis.call('GET', ukey) == tid and redis.call('PTTL', ukey) < lease then
      redis.call('PEXPIRE', ukey, lease)
    end
  else
    lost[#lost + 1] = entry
  end
end
return {lost, aborted}
