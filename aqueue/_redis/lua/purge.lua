-- Purge one queue of work that is waiting: stream entries no worker has read
-- yet, and delayed / retrying tasks. Entries already delivered (pending in
-- the consumer group) belong to running tasks and keep their leases; they
-- finish or are reclaimed as usual. Each purged task is marked aborted, so
-- anyone awaiting it wakes up with TaskAborted instead of waiting forever.
-- Works in chunks of `limit`; call again while it returns a non-zero count.
-- KEYS: stream, delayed, delayed_payloads, outbox (workflows: purged steps end
--   their workflows)
-- ARGV: task_prefix, group, result_ttl_ms, done_channel, error, limit
-- Returns {stream entries removed, delayed tasks removed}.
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, group, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local channel, err, limit = ARGV[4], ARGV[5], tonumber(ARGV[6])
local now = now_ms()
events_from(4)
local done = {}

local function abort_record(tid, waiting_states, payload)
  local rec = prefix .. tid
  local state = redis.call('HGET', rec, 'state')
  if state == 'aborted' and waiting_states.queued then
    -- Aborted while queued, its entry not dropped by a worker yet: dropped here,
    -- so this is where it ends its workflow and its record gets its TTL.
    local seen = redis.call('HMGET', rec, 'error', 'attl')
    step_ended(KEYS[4], payload, 'aborted', seen[1])  -- workflows
    if seen[2] then redis.call('PEXPIRE', rec, seen[2]) end
    return
  end
  if state and waiting_states[state] then
    step_ended(KEYS[4], payload, 'aborted', err)  -- workflows
    redis.call('HSET', rec, 'state', 'aborted', 'finished', now, 'error', err)
    redis.call('PEXPIRE', rec, ttl)
    release_unique(rec, tid)
    emit(rec, tid, 'aborted', '', now, err)
    done[#done + 1] = tid
  end
end

-- Acknowledged entries are deleted, so everything after the group's
-- last-delivered id is waiting and everything up to it is running.
local last = '0-0'
if redis.call('EXISTS', stream) == 1 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
    if fields['name'] == group then last = fields['last-delivered-id'] end
  end
end
local from_stream = 0
local entries = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', limit)
for _, e in ipairs(entries) do
  local tid, payload = entry_fields(e[2])
  if tid ~= '' then abort_record(tid, {queued = true}, payload) end
  redis.call('XDEL', stream, e[1])
  from_stream = from_stream + 1
end

-- flow control: urgent tasks and tasks waiting for a concurrency token
from_stream = from_stream + purge_flow(stream, limit, abort_record)

local from_delayed = 0
for _, tid in ipairs(redis.call('ZRANGE', delayed, 0, limit - 1)) do
  local payload = redis.call('HGET', payloads, tid)
  redis.call('ZREM', delayed, tid)
  redis.call('HDEL', payloads, tid)
  abort_record(tid, {scheduled = true, retrying = true}, payload)
  from_delayed = from_delayed + 1
end

if #done > 0 then publish(channel, table.concat(done, '\n')) end
flush_events()
return {from_stream, from_delayed}
