-- Store a running task's latest progress report and publish it as an event,
-- atomically (used only with events on; otherwise progress is a plain HSET).
-- KEYS: task record
-- ARGV: task_id, encoded progress
local rec = KEYS[1]
local tid = ARGV[1]
events_from(1)
redis.call('HSET', rec, 'progress', ARGV[2])
emit(rec, tid, 'progress', redis.call('HGET', rec, 'worker') or '', now_ms())
flush_events()
