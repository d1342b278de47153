-- Record the outcome of a batch of deliveries and acknowledge them, atomically.
-- A delivery that is no longer this consumer's (its lease lapsed and another
-- worker reclaimed it, which re-marked the task record atomically with the
-- claim) or no longer pending is fenced off: nothing is written.
-- KEYS: stream, delayed, delayed_payloads, dead, outbox
-- ARGV: task_prefix, group, consumer, result_ttl_ms, done_channel, dead_maxlen,
--   control_channel, rows, blob; a row per delivery:
--   {entry_id, task_id, state, result length, error length, retry_delay_ms,
--    payload length, reason, unique (1: release the task's unique key),
--    follow length (workflows: hand-off rows for the outbox)};
--   the blob holds result, error, payload, follow of each
-- state is one of succeeded, failed, expired, aborted, retrying, dead.
-- Returns the entry ids that were fenced off.
local stream, delayed, payloads, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local ttl, channel, dead_maxlen, control = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local wake = false
local now = now_ms()
events_from(5)
local rows, blob, pos = cmsgpack.unpack(ARGV[8]), ARGV[9], 1
local fenced, done, acked = {}, {}, 0
local handoffs = {}  -- workflows: next steps
local urgent_acked = false  -- flow control
for _, row in ipairs(rows) do
  local entry, tid, state = row[1], row[2], row[3]
  local result, err, payload
  result, pos = cut(blob, pos, row[4])
  err, pos = cut(blob, pos, row[5])
  payload, pos = cut(blob, pos, row[7])
  local follow  -- workflows: the hand-offs this outcome sends on
  follow, pos = cut(blob, pos, row[10] or 0)
  local retry_delay, reason, unique = row[6], row[8], row[9]
  local rec = prefix .. tid
  local owned, repeated = true, false
  local estream, ckey = stream, nil  -- flow control: the entry's stream, its token
  local name, attempt, started  -- for the outcome's event
  if entry ~= '' then
    -- name, attempt, started: for the outcome's event, read here at no extra cost
    local owner = redis.call('HMGET', rec, 'worker', 'entry', 'ck', 'name', 'attempt', 'started')
    ckey = owner[3]
    name, attempt, started = owner[4], owner[5], owner[6]
    if ckey or string.sub(entry, 1, 2) == '0-' then
      estream = stream_of(stream, entry)
      if estream ~= stream then urgent_acked = true end
    end
    if owner[2] then
      owned = owner[1] == consumer and owner[2] == entry
    else  -- no record (purged): ask the stream who holds the entry
      owned = #redis.call('XPENDING', estream, group, entry, entry, 1, consumer) == 1
    end
    if owned and redis.call('XACK', estream, group, entry) == 0 then
      owned = false
      repeated = recorded_before(rec, entry)
    end
    acked = acked + 1
  end
  if repeated then
    -- Recorded by this same call before its reply was lost: nothing to do.
  elseif not owned then
    fenced[#fenced + 1] = entry
  else
    if entry ~= '' then redis.call('HSET', rec, 'fin', entry) end
    if state == 'retrying' and redis.call('HEXISTS', rec, 'abort') == 1 then
      -- Asked to abort while it ran: it is not tried again (abort() waits for this).
      state, err = 'aborted', redis.call('HGET', rec, 'aerr') or err
    end
    if state == 'retrying' then
      local due = now + tonumber(retry_delay)
      redis.call('ZADD', delayed, due, tid)
      if redis.call('ZRANGE', delayed, 0, 0)[1] == tid then wake = true end
      redis.call('HSET', payloads, tid, payload)
      redis.call('HSET', rec, 'state', 'retrying', 'error', err, 'eta', due)
      if ckey then release_token(stream, group, prefix, rec, tid, ckey, now) end  -- flow control
      if tid ~= '' then
        emit(rec, tid, 'retrying', consumer, now, err, true, name, attempt, started)
      end
    else
      if state == 'dead' then
        redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'id', tid,
          'm', payload, 'reason', reason, 'error', err, 'at', now,
          'attempt', redis.call('HGET', rec, 'attempt') or '0', 'entry', entry)
      end
      if state == 'succeeded' then
        redis.call('HSET', rec, 'state', state, 'result', result, 'finished', now)
      else
        redis.call('HSET', rec, 'state', state, 'error', err, 'finished', now)
        -- A failed task keeps its message (dashboard: arguments, run again).
        if state == 'failed' and payload ~= '' then redis.call('HSET', rec, 'msg', payload) end
      end
      redis.call('PEXPIRE', rec, ttl)
      if tid ~= '' then
        local e = state ~= 'succeeded' and err or ''
        emit(rec, tid, state, consumer, now, e, true, name, attempt, started)
      end
      if ckey then release_token(stream, group, prefix, rec, tid, ckey, now) end  -- flow control
      -- workflows: the next steps leave with this outcome, atomically
      if follow ~= '' then handoffs[#handoffs + 1] = follow end
      if unique == 1 then
        release_unique(rec, tid)
      end
      if state == 'succeeded' then
        done[#done + 1] = push_frame(tid, state, result)
      else
        done[#done + 1] = push_frame(tid, state, err)
      end
    end
  end
end
-- workflows: one outbox entry for the batch's hand-offs (a field each); a
-- forwarder moves them to their queues (see forward.lua)
if #handoffs > 0 then
  local fields = {}
  for i, h in ipairs(handoffs) do fields[2 * i - 1], fields[2 * i] = i, h end
  redis.call('XADD', KEYS[5], '*', unpack(fields))
end
if acked > 0 then trim_acked(stream, group) end
if urgent_acked then trim_acked(flow_base(stream) .. ':pstream', group) end  -- flow control
-- A leading NUL marks the framed format (other scripts publish plain ids).
if #done > 0 then publish(channel, '\0' .. table.concat(done)) end
if wake then publish(control, 'delayed') end
flush_events()
return fenced
