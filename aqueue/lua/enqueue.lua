-- Enqueue a batch of messages into one queue, atomically.
-- KEYS: stream, delayed, delayed_payloads
-- ARGV: task_prefix, control_channel, rows, blob of payloads; a row per message:
--   {task_id, task_name, payload length, fresh (1: replace any old record),
--    delay_ms (0: now), unique_key ('' for none), unique_ttl_ms}
-- Returns, per message, the id of the task that now represents it: its own
-- id, or the id of the live task already holding its unique key.
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, control = ARGV[1], ARGV[2]
local wake = false
local now = now_ms()
local rows, blob, pos = cmsgpack.unpack(ARGV[3]), ARGV[4], 1
local out = {}
for _, row in ipairs(rows) do
  local tid, name, payload = row[1], row[2], nil
  payload, pos = cut(blob, pos, row[3])
  local fresh, delay, ukey, uttl = row[4], row[5], row[6], row[7]
  local owner = false
  if ukey ~= '' then
    owner = redis.call('GET', ukey)
    if owner then
      local st = redis.call('HGET', prefix .. owner, 'state')
      if st == 'queued' or st == 'scheduled' or st == 'running' or st == 'retrying' then
        out[#out + 1] = owner
      else
        owner = false
      end
    end
  end
  if not owner then
    local rec = prefix .. tid
    if fresh == 1 then redis.call('DEL', rec) end
    if ukey ~= '' then
      redis.call('SET', ukey, tid, 'PX', uttl)
      redis.call('HSET', rec, 'ukey', ukey)
    end
    if delay > 0 then
      redis.call('ZADD', delayed, now + delay, tid)
      if redis.call('ZRANGE', delayed, 0, 0)[1] == tid then wake = true end
      redis.call('HSET', payloads, tid, payload)
      redis.call('HSET', rec, 'state', 'scheduled', 'name', name, 'enq', now, 'eta', now + delay)
    else
      redis.call('XADD', stream, '*', 'id', tid, 'm', payload)
      redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now)
    end
    out[#out + 1] = tid
  end
end
-- Workers sleep until the earliest due time; a new earliest one wakes them.
if wake then redis.call('PUBLISH', control, 'delayed') end
return out
