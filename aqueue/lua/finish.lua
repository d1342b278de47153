-- Record the outcome of a batch of deliveries and acknowledge them, atomically.
-- A delivery whose entry is no longer pending for this consumer (its lease
-- lapsed and another worker reclaimed it) is fenced off: nothing is written.
-- KEYS: stream, delayed, delayed_payloads, dead
-- ARGV: task_prefix, group, consumer, result_ttl_ms, done_channel, dead_maxlen,
--   control_channel,
--   then 8 per delivery:
--   entry_id, task_id, state, result, error, retry_delay_ms, payload, reason
-- state is one of succeeded, failed, expired, aborted, retrying, dead.
-- Returns the entry ids that were fenced off.
local stream, delayed, payloads, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local ttl, channel, dead_maxlen, control = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local wake = false
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fenced, done = {}, {}
for i = 8, #ARGV, 8 do
  local entry, tid, state = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local owned = entry == '' or
    #redis.call('XPENDING', stream, group, entry, entry, 1, consumer) == 1
  if not owned then
    fenced[#fenced + 1] = entry
  else
    local rec = prefix .. tid
    if entry ~= '' then
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
    end
    if state == 'retrying' then
      local due = now + tonumber(ARGV[i + 5])
      redis.call('ZADD', delayed, due, tid)
      if redis.call('ZRANGE', delayed, 0, 0)[1] == tid then wake = true end
      redis.call('HSET', payloads, tid, ARGV[i + 6])
      redis.call('HSET', rec, 'state', 'retrying', 'error', ARGV[i + 4], 'eta', due)
    else
      if state == 'dead' then
        redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'id', tid,
          'm', ARGV[i + 6], 'reason', ARGV[i + 7], 'error', ARGV[i + 4], 'at', now,
          'attempt', redis.call('HGET', rec, 'attempt') or '0')
      end
      if state == 'succeeded' then
        redis.call('HSET', rec, 'state', state, 'result', ARGV[i + 3], 'finished', now)
      else
        redis.call('HSET', rec, 'state', state, 'error', ARGV[i + 4], 'finished', now)
      end
      redis.call('PEXPIRE', rec, ttl)
      local ukey = redis.call('HGET', rec, 'ukey')
      if ukey and redis.call('GET', ukey) == tid then redis.call('DEL', ukey) end
      done[#done + 1] = tid
    end
  end
end
if #done > 0 then redis.call('PUBLISH', channel, table.concat(done, '\n')) end
if wake then redis.call('PUBLISH', control, 'delayed') end
return fenced
