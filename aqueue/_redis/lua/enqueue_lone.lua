-- Enqueue one plain message into the stream: the lone enqueue() of a task
-- without delay, unique key, priority or limits, events off. The same writes
-- as enqueue.lua for such a message; this script carries only the helpers
-- those need, so Redis defines a few per call instead of twenty (about half
-- of a lone enqueue's script time).
-- KEYS: stream
-- ARGV: task_prefix, task_id, task_name, payload, fresh ('1': replace any old record)
-- Returns an empty list, as enqueue.lua does for a message that is its own task.
local prefix, tid, payload = ARGV[1], ARGV[2], ARGV[4]
local fresh = ARGV[5] == '1'
if not already_enqueued(prefix .. tid, fresh, payload) then
  local now = known_now()
  enqueue_one(KEYS[1], false, false, prefix, tid, ARGV[3], payload, fresh, 0, '', 0,
    now and string.format('%d', now))
  if fresh then mark_enqueued_by(prefix .. tid, payload) end
end
return {}
