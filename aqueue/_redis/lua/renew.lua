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
-- Over maxmemory (noeviction) Redis refuses a script whose *first* write may
-- grow memory, and lets through every write of a script that has written
-- already (it never stops a script half-way). A heartbeat only moves a score;
-- refused, every worker would look dead and its tasks would run twice. So it
-- comes after a write that never grows memory: the lease extensions above,
-- else a PERSIST of the registry (which never has a TTL: it changes nothing).
if #ARGV < 5 then redis.call('PERSIST', workers) end
redis.call('ZADD', workers, now, consumer)
return {lost, aborted}
