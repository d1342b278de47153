-- Enqueue a batch of messages into one queue, atomically.
-- KEYS: stream, delayed, delayed_payloads
-- ARGV: task_prefix, control_channel, then 7 per message:
--   task_id, task_name, payload, fresh ('1': replace any old record),
--   delay_ms ('0': now), unique_key ('' for none), unique_ttl_ms
-- Returns, per message, the id of the task that now represents it: its own
-- id, or the id of the live task already holding its unique key.
local stream, delayed, payloads = KEYS[1], KEYS[2], KEYS[3]
local prefix, control = ARGV[1], ARGV[2]
local wake = false
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 3, #ARGV, 7 do
  local tid, name, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fresh, delay = ARGV[i + 3], tonumber(ARGV[i + 4])
  local ukey, uttl = ARGV[i + 5], tonumber(ARGV[i + 6])
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
    if fresh == '1' then redis.call('DEL', rec) end
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
