-- A plain def task waiting for a free worker thread is not running yet: it is
-- shown as queued while it waits, and marked running when a thread begins it.
-- KEYS: the task's record
-- ARGV: mode ('park' or 'resume'), consumer, entry, task id
-- park: running -> queued, for this worker's delivery only; 1 when parked.
-- resume: 1 and marked running (started now) when it may run; 0 when it was
-- aborted while it waited, or is no longer this worker's.
-- Events: 'queued' when parked, 'started' when resumed (by this worker).
local rec = KEYS[1]
local mode, consumer, entry, tid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
events_from(1)
local seen = redis.call('HMGET', rec, 'state', 'worker', 'entry', 'abort')
if seen[2] ~= consumer or seen[3] ~= entry then return 0 end
if mode == 'park' then
  if seen[1] == 'running' and not seen[4] then
    redis.call('HSET', rec, 'state', 'queued')
    emit(rec, tid, 'queued', consumer, now_ms())
    flush_events()
    return 1
  end
  return 0
end
if seen[1] == 'aborted' or seen[4] then return 0 end
local now = now_ms()
redis.call('HSET', rec, 'state', 'running', 'started', now)
emit(rec, tid, 'started', consumer, now)
flush_events()
return 1
