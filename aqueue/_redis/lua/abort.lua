-- Abort a task. A waiting task (queued, scheduled, retrying) is marked aborted
-- and never starts; a running one is flagged and its workers are told.
-- KEYS: delayed, delayed_payloads, outbox (workflows)
-- ARGV: task_prefix, task_id, result_ttl_ms, done_channel, control_channel, error
-- Returns the state the task was in ('' when unknown).
local delayed, payloads = KEYS[1], KEYS[2]
local prefix, tid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rec = prefix .. tid
events_from(3)
local state = redis.call('HGET', rec, 'state')
if not state then return '' end
local now = now_ms()
local err = ARGV[6]
if state == 'queued' or state == 'scheduled' or state == 'retrying' then
  -- Workflows: a waiting step ends its workflow; a queued one does when a
  -- worker drops its entry (mark_started).
  if state ~= 'queued' then
    step_ended(KEYS[3], redis.call('HGET', payloads, tid), 'aborted', err)
  end
  redis.call('ZREM', delayed, tid)
  redis.call('HDEL', payloads, tid)
  redis.call('HSET', rec, 'state', 'aborted', 'finished', now, 'error', err)
  -- Queued entries stay in the stream; the start script drops them unrun and
  -- only then gives the record its TTL (`attl`), so it can't expire first.
  if state ~= 'queued' then
    redis.call('PEXPIRE', rec, ttl)
  else
    redis.call('HSET', rec, 'attl', ttl)
  end
  release_unique(rec, tid)
  emit(rec, tid, 'aborted', '', now, err)
  publish(ARGV[4], tid)
elseif state == 'running' then
  -- `aerr`: the error a retry of this run is recorded with instead (finish.lua).
  redis.call('HSET', rec, 'abort', '1', 'aerr', err)
  publish(ARGV[5], 'abort\n' .. tid)
end
flush_events()
return state
