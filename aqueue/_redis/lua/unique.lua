-- Enqueue one message whose unique key debounces or replaces, atomically.
-- KEYS: stream, delayed, delayed_payloads, unique key
-- ARGV: task_prefix, control_channel, task_id, task_name, payload, mode ('debounce' or
--   'replace'), delay_ms (debounce: the window), unique_ttl_ms
-- Returns {'ok', id}: the message is now task `id` (a new task, or the waiting
-- one it updated); {'rebuild', id}: a task `id` holds the key and has not
-- started, so the caller must send this message again carrying that id (the
-- message names its own task, so the script can't rewrite it); {'again', ''}:
-- the message was rebuilt for a task that started meanwhile, send a new one.
-- Events: a new task 'scheduled' (or 'queued' without a delay); a debounced
-- task 'scheduled' again each time its window starts again.
local stream, delayed, payloads, ukey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, control = ARGV[1], ARGV[2]
local tid, name, payload, mode = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local delay, uttl = tonumber(ARGV[7]), ARGV[8]  -- uttl stays text: it goes to SET as is
local now = now_ms()
events_from(4)

local owner = live_owner(prefix, ukey)
-- Not started yet: still waiting for its time in the delayed set, with its message.
local waiting = owner and redis.call('HGET', prefix .. owner, 'state') == 'scheduled'
  and redis.call('HEXISTS', payloads, owner) == 1

if waiting and owner ~= tid then return {'rebuild', owner} end
if waiting then
  -- This message carries the waiting task's id: its arguments win.
  redis.call('HSET', payloads, tid, payload)
  if mode == 'debounce' then
    -- The window starts again from this enqueue.
    local eta = string.format('%d', now + delay)  -- as text (int_text says why)
    redis.call('ZADD', delayed, eta, tid)
    redis.call('HSET', prefix .. tid, 'eta', eta)
    redis.call('SET', ukey, tid, 'PX', uttl)
    emit(prefix .. tid, tid, 'scheduled', '', now)
    flush_events()
  end
  return {'ok', tid}
end
-- The task this message was rebuilt for has started (or ended) meanwhile.
if owner == tid or redis.call('EXISTS', prefix .. tid) == 1 then return {'again', ''} end
-- No waiting task holds the key (none, or the holder already started): a new task.
if enqueue_one(stream, delayed, payloads, prefix, tid, name, payload, false, delay, ukey, uttl,
    string.format('%d', now)) then
  publish(control, 'delayed')
end
emit('', tid, delay > 0 and 'scheduled' or 'queued', '', now, nil, false, name, 0, false)
flush_events()
return {'ok', tid}
