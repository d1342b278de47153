-- Record the outcome of a batch of deliveries and acknowledge them, atomically.
-- A delivery that is no longer this consumer's is fenced off: nothing is
-- written. The task record says whose it is: every script that hands an entry
-- to a consumer (fetch, start, reclaim) names that consumer and entry in the
-- record with state running, atomically with the delivery, and every script
-- that takes an entry away (reclaim's dead-lettering, a worker leaving, a
-- finish) changes the state or the names in the same call. So the record, read
-- once, decides; the owned entries are then acknowledged with one XACK per
-- stream for the whole batch.
-- KEYS: stream, delayed, delayed_payloads, dead, outbox
-- ARGV: task_prefix, group, consumer, result_ttl_ms, done_channel, dead_maxlen,
--   control_channel, rows, blob; rows: one flat msgpack array (a table per row
--   would cost more than the rest of the row's work), per delivery
--   entry_id, task_id, state, body length, 0, or in the long form
--   entry_id, task_id, state, body length, 1, unique (1: release the task's
--   unique key), retry_delay_ms, payload length, reason, follow length
--   (workflows: hand-off rows for the outbox); with events on, each row ends
--   with the task's name, attempt and run time in ms, for the outcome's event
--   (name '': read them from the record); the blob holds each row's body
--   (the result of a success, else the error), then in the long form its
--   payload and follow
-- state is one of succeeded, failed, expired, aborted, retrying, dead.
-- Returns the entry ids that were fenced off.
local stream, delayed, payloads, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local ttl, channel, dead_maxlen, control = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local wake = false
local now = now_ms()
local now_text = int_text(now)
events_from(5)
local rows = cmsgpack.unpack(ARGV[8])
local nvalues = #rows
-- done: the push frames' parts (add_push_frame) after the framed format's mark
local fenced, done, ndone = {}, { '\0' }, 1
local handoffs, handed_by = {}, {}  -- workflows: next steps, and the step handing each on
-- The owned entries of the stream and (flow control) of the urgent stream.
local acks, urgent_acks, nacks = {}, {}, 0

-- Workflows: what a step handed on (its hand-off rows, `follow`), for its
-- record's `next` (the dashboard's links): a msgpack array of the number of
-- rows, then queue, id (a chord's, for a chord member) and kind of the first
-- NEXT_KEPT rows (a group before its members can hand on thousands). The rows
-- (an array of [queue, id, name, body, kind], the body binary, which cmsgpack
-- can't read) are walked, not decoded: only their heads are looked at.
local NEXT_KEPT = 20
-- The length and start of the msgpack str or bin at `pos` (nil: neither).
local function sized_at(s, pos)
  local b = string.byte(s, pos)
  if not b then return nil end
  if b >= 0xa0 and b <= 0xbf then return b - 0xa0, pos + 1 end
  if b == 0xd9 or b == 0xc4 then return string.byte(s, pos + 1), pos + 2 end
  if b == 0xda or b == 0xc5 then return struct.unpack('>I2', s, pos + 1), pos + 3 end
  if b == 0xdb or b == 0xc6 then return struct.unpack('>I4', s, pos + 1), pos + 5 end
  return nil
end
local function handed_on(follow)
  local b, pos, count = string.byte(follow, 1) or 0, 2, 0
  if b >= 0x90 and b <= 0x9f then count = b - 0x90
  elseif b == 0xdc then count, pos = struct.unpack('>I2', follow, 2)
  elseif b == 0xdd then count, pos = struct.unpack('>I4', follow, 2) end
  local out, n = { count }, 1
  for _ = 1, math.min(count, NEXT_KEPT) do
    if string.byte(follow, pos) ~= 0x95 then break end
    local fields, len, at = {}, nil, pos + 1
    for f = 1, 4 do  -- queue, id, name, body
      len, at = sized_at(follow, at)
      if not len then return cmsgpack.pack(out) end
      fields[f], at = string.sub(follow, at, at + len - 1), at + len
    end
    out[n + 1], out[n + 2], out[n + 3] = fields[1], fields[2], string.byte(follow, at)
    n, pos = n + 3, at + 1
  end
  return cmsgpack.pack(out)
end

-- First pass, reads only: which rows to record. Per row, the record's
-- worker, entry, state, ck, or true for a row without an entry (recorded as
-- it is), or false.
-- (A field read costs about as much as a small command: only these.)
-- The batch's first write is then the XACK, which never grows memory: Redis
-- over maxmemory still lets the whole script through (see renew.lua).
local seen, recs = {}, {}  -- recs: each row's record key, made once for both passes
local k, i = 1, 0
while k <= nvalues do
  local entry, tid = rows[k], rows[k + 1]
  i = i + 1
  if rows[k + 4] == 1 then k = k + 10 else k = k + 5 end
  if EVENTS then k = k + 3 end
  if entry == '' then
    seen[i] = true
  else
    local rec = prefix .. tid
    recs[i] = rec
    local r = redis.call('HMGET', rec, 'worker', 'entry', 'state', 'ck')
    -- Urgent entries (flow control) have ids 0-N; a stream's own ids begin
    -- with the milliseconds since 1970, never with 0. (A comparison, not a
    -- string.byte: a call into C costs about 1,000 instructions a row.)
    local urgent = entry < '1'
    local owned
    if r[2] then
      owned = r[1] == consumer and r[2] == entry and r[3] == 'running'
    else  -- no record (purged): ask the stream who holds the entry
      local estream = stream
      if urgent then estream = stream_of(stream, entry) end
      owned = #redis.call('XPENDING', estream, group, entry, entry, 1, consumer) == 1
    end
    if owned then
      seen[i] = r
      if urgent then
        urgent_acks[#urgent_acks + 1] = entry
      else
        nacks = nacks + 1
        acks[nacks] = entry
      end
    else
      seen[i] = false
      -- This consumer's entry whose outcome is recorded already: the same call
      -- sent again after its reply was lost. Nothing to do, and not fenced off.
      if not (r[1] == consumer and r[2] == entry and recorded_before(rec, entry)) then
        fenced[#fenced + 1] = entry
      end
    end
  end
end
if nacks > 0 then redis.call('XACK', stream, group, unpack(acks, 1, nacks)) end
if #urgent_acks > 0 then  -- flow control
  redis.call('XACK', flow_base(stream) .. ':pstream', group, unpack(urgent_acks))
end

local blob, pos = ARGV[9], 1
k, i = 1, 0
while k <= nvalues do
  local entry, tid, state = rows[k], rows[k + 1], rows[k + 2]
  local len = rows[k + 3]
  local body = string.sub(blob, pos, pos + len - 1)  -- (cut, without a call per row)
  pos = pos + len
  local result, err = body, body
  local unique, retry_delay, payload, reason = 0, 0, '', ''
  local follow = ''  -- workflows: the hand-offs this outcome sends on
  if rows[k + 4] == 1 then
    unique, retry_delay, reason = rows[k + 5], rows[k + 6], rows[k + 8]
    payload, pos = cut(blob, pos, rows[k + 7])
    follow, pos = cut(blob, pos, rows[k + 9])
    k = k + 10
  else
    k = k + 5
  end
  local name, attempt, started  -- for the outcome's event (name nil: emit reads the record)
  if EVENTS then
    if rows[k] ~= '' then name, attempt, started = rows[k], rows[k + 1], now - rows[k + 2] end
    k = k + 3
  end
  i = i + 1
  local r = seen[i]
  if r then
    local rec = recs[i] or prefix .. tid
    local ckey  -- flow control: the entry's concurrency token
    if r ~= true then ckey = r[4] end
    if state == 'retrying' and redis.call('HEXISTS', rec, 'abort') == 1 then
      -- Asked to abort while it ran: it is not tried again (abort() waits for this).
      state, err = 'aborted', redis.call('HGET', rec, 'aerr') or err
    end
    -- `fin`: the entry whose outcome the record holds (see recorded_before).
    if state == 'retrying' then
      local due = int_text(now + tonumber(retry_delay))
      redis.call('ZADD', delayed, due, tid)
      if redis.call('ZRANGE', delayed, 0, 0)[1] == tid then wake = true end
      redis.call('HSET', payloads, tid, payload)
      redis.call('HSET', rec, 'state', 'retrying', 'error', err, 'eta', due, 'fin', entry)
      if ckey then release_token(stream, group, prefix, rec, tid, ckey, now) end  -- flow control
      if tid ~= '' then
        emit(rec, tid, 'retrying', consumer, now, err, true, name, attempt, started)
      end
    else
      if state == 'dead' then
        redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'id', tid,
          'm', payload, 'reason', reason, 'error', err, 'at', now_text,
          'attempt', redis.call('HGET', rec, 'attempt') or '0', 'entry', entry)
      end
      if state == 'succeeded' and follow ~= '' then  -- workflows: with what it handed on
        redis.call('HSET', rec, 'state', state, 'result', result, 'finished', now_text,
          'fin', entry, 'next', handed_on(follow))
      elseif state == 'succeeded' then
        redis.call('HSET', rec, 'state', state, 'result', result, 'finished', now_text,
          'fin', entry)
      elseif state == 'failed' and payload ~= '' then
        -- A failed task keeps its message (dashboard: arguments, run again).
        redis.call('HSET', rec, 'state', state, 'error', err, 'finished', now_text, 'fin', entry,
          'msg', payload)
      else
        redis.call('HSET', rec, 'state', state, 'error', err, 'finished', now_text, 'fin', entry)
      end
      redis.call('PEXPIRE', rec, ttl)
      if tid ~= '' and EVENTS then
        if state == 'succeeded' and name then  -- the usual event, its values at hand
          emit_plain(tid, name, state, consumer, now, attempt, now - started)
        else
          local e = state ~= 'succeeded' and err or ''
          emit(rec, tid, state, consumer, now, e, true, name, attempt, started)
        end
      end
      if ckey then release_token(stream, group, prefix, rec, tid, ckey, now) end  -- flow control
      -- workflows: the next steps leave with this outcome, atomically
      if follow ~= '' then
        handed_by[#handoffs + 1] = tid
        handoffs[#handoffs + 1] = follow
        if state ~= 'succeeded' then redis.call('HSET', rec, 'next', handed_on(follow)) end
      end
      if unique == 1 then
        release_unique(rec, tid)
      end
      if state == 'succeeded' then
        ndone = add_push_frame(done, ndone, tid, state, result)
      else
        ndone = add_push_frame(done, ndone, tid, state, err)
      end
    end
  end
end
-- workflows: one outbox entry for the batch's hand-offs (a field each, named
-- '<n>:<id of the step handing them on>'); a forwarder moves them to their
-- queues (see forward.lua)
if #handoffs > 0 then
  local fields = {}
  for i, h in ipairs(handoffs) do fields[2 * i - 1], fields[2 * i] = i .. ':' .. handed_by[i], h end
  redis.call('XADD', KEYS[5], '*', unpack(fields))
end
if nacks > 0 then trim_acked(stream, group) end
if #urgent_acks > 0 then trim_acked(flow_base(stream) .. ':pstream', group) end  -- flow control
-- A leading NUL marks the framed format (other scripts publish plain ids).
if ndone > 1 then publish(channel, table.concat(done, '', 1, ndone)) end
if wake then publish(control, 'delayed') end
flush_events()
return fenced
