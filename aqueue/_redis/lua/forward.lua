-- Workflows: enqueue (or fail) next steps handed over from a queue's outbox.
-- KEYS: stream (of the queue the steps belong to)
-- ARGV: task_prefix, done_channel, result_ttl_ms, rows, blob; a row per step:
--   {task_id, task_name, body length, kind (0: enqueue the body as the step's
--    message; 1: the step fails, never having run, with the body as its error)}
-- A step whose record exists was forwarded before (by a forwarder that stopped
-- before it dropped the hand-off, or by another worker at the same time): it is
-- left alone, so a hand-off forwarded twice never runs a step twice.
-- Returns how many steps were enqueued.
local stream = KEYS[1]
local prefix, channel, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local rows, blob, pos = cmsgpack.unpack(ARGV[4]), ARGV[5], 1
local done, enqueued = {}, 0
for _, row in ipairs(rows) do
  local tid, name, kind = row[1], row[2], row[4]
  local body
  body, pos = cut(blob, pos, row[3])
  local rec = prefix .. tid
  if redis.call('EXISTS', rec) == 0 then
    if kind == 0 then
      redis.call('XADD', stream, '*', 'id', tid, 'm', body)
      redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now)
      enqueued = enqueued + 1
    else
      redis.call('HSET', rec, 'state', 'failed', 'name', name, 'error', body, 'enq', now,
        'finished', now)
      redis.call('PEXPIRE', rec, ttl)
      done[#done + 1] = push_frame(tid, 'failed', body)
    end
  end
end
if #done > 0 then redis.call('PUBLISH', channel, '\0' .. table.concat(done)) end
return enqueued
