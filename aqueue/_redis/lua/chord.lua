-- Workflows: enqueue a chord's callback once every member has ended, exactly once.
-- KEYS: stream, chord (both of the callback's queue)
-- ARGV: task_prefix, done_channel, result_ttl_ms, callback task id, task name,
--   kind (0: enqueue the body as the callback's message; 1: the callback fails,
--   never having run, with the body as its error), body, chord id (kept in the
--   callback's record as `chord`, for the dashboard)
-- The chord is marked fired in the same call, so a forwarder that repeats this
-- (it stopped before dropping the last member's hand-off) changes nothing. The
-- members' outcomes, now in the callback's message, expire with the results.
-- Returns 1 when this call fired the chord, 0 when it had been fired before.
local stream, chord = KEYS[1], KEYS[2]
local prefix, channel, ttl = ARGV[1], ARGV[2], ARGV[3]
local tid, name, kind, body, chord_id = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
events_from(2)
if redis.call('HGET', chord, 'fired') then return 0 end
local now = now_ms()
local now_text = string.format('%d', now)  -- redis.call would print a number with '%.17g'
redis.call('HSET', chord, 'fired', now_text)
redis.call('PEXPIRE', chord, ttl)
local rec = prefix .. tid
if redis.call('HGET', rec, 'state') == 'aborted' then
  -- workflows: a chain's step after a group, aborted before the chord fired
  return 1
end
if kind == '0' then
  redis.call('XADD', stream, '*', 'id', tid, 'm', body)
  redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now_text, 'chord', chord_id)
  emit(rec, tid, 'queued', '', now)
else
  redis.call('HSET', rec, 'state', 'failed', 'name', name, 'error', body, 'enq', now_text,
    'finished', now_text, 'chord', chord_id)
  emit(rec, tid, 'failed', '', now, body)
  redis.call('PEXPIRE', rec, ttl)
  publish(channel, '\0' .. push_frame(tid, 'failed', body))
end
flush_events()
return 1
