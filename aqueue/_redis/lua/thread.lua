-- A plain def task waiting for a free worker thread is not running yet: it is
-- shown as queued while it waits, and marked running when a thread begins it.
-- KEYS: the task's record
-- ARGV: mode ('park' or 'resume'), consumer, entry
-- park: running -> queued, for this worker's delivery only; 1 when parked.
-- resume: 1 and marked running (started now) when it may run; 0 when it was
-- aborted while it waited, or is no longer this worker's.
local rec = KEYS[1]
local mode, consumer, entry = ARGV[1], ARGV[2], ARGV[3]
local seen = redis.call('HMGET', rec, 'state', 'worker', 'entry', 'abort')
if seen[2] ~= consumer or seen[3] ~= entry then return 0 end
if mode == 'park' then
  if seen[1] == 'running' and not seen[4] then
    redis.call('HSET', rec, 'state', 'queued')
    return 1
  end
  return 0
end
if seen[1] == 'aborted' or seen[4] then return 0 end
redis.call('HSET', rec, 'state', 'running', 'started', now_ms())
return 1
