-- Read up to `count` new entries without blocking and mark them running, in
-- one round trip. Scripts can't block: when the stream ran dry, the reply says
-- so (see its end), and an idle worker then blocks in a read on the same
-- connection with this script queued behind it, or in a blocking XREADGROUP.
-- Urgent tasks (a priority above 0) come first, most urgent first; entries
-- over a rate or concurrency limit leave the stream to wait in Redis (see
-- _flow.lua), and more entries are read in their place. Entries refused at
-- the door (see take_entry) are dead-lettered here and not run.
-- KEYS: stream, dead, outbox (workflows: where an aborted step's message goes)
-- ARGV: task_prefix, group, consumer, count, max_deliveries, dead_maxlen,
--   result_ttl_ms, done_channel
-- Returns a flat list: entry_id, task_id, payload, attempt for each entry to
-- run, and entry_id, task_id, reason, -1 for each one refused at the door;
-- then, when the stream ran dry and the wait is offered, one more value.
local stream = KEYS[1]
local prefix, group, consumer, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
events_from(3)
local out, nout = {}, 0  -- (a count kept: `#out` searches the table each time)
local now = now_ms()
local q = {
  stream = stream, group = group, consumer = consumer, dead = KEYS[2], outbox = KEYS[3],
  prefix = prefix, max_deliveries = tonumber(ARGV[5]), dead_maxlen = ARGV[6],
  ttl = tonumber(ARGV[7]), now = now, done = {},
}
local runnable = 0
local function accept(entries)
  for j = 1, #entries do  -- (not ipairs: a call into C per entry)
    local entry, fields = entries[j][1], entries[j][2]
    if fields[1] == 'bell' then
      redis.call('XACK', stream, group, entry)  -- it woke nobody: drop it
      redis.call('XDEL', stream, entry)
    else
      local tid, payload, flow, before
      if fields[5] == nil and fields[1] == 'id' and fields[3] == 'm' then
        tid, payload, flow, before = fields[2], fields[4], '', 0  -- the usual entry
      else
        tid, payload, flow, before = entry_fields(fields)
      end
      local gate = nil
      if flow ~= '' and tid ~= '' then
        gate = function() return admit(stream, group, prefix, entry, tid, payload, flow, now) end
      end
      local attempt, _, refused = take_entry(q, entry, tid, payload, before, 1, gate)
      if attempt > 0 then
        out[nout + 1], out[nout + 2], out[nout + 3], out[nout + 4] = entry, tid, payload, attempt
        nout = nout + 4
        runnable = runnable + 1
        if EVENTS then
          -- (a message without a task id goes by its entry's id, as on the worker)
          local named = tid ~= '' and tid or entry
          emit_plain(named, STARTED_NAME, 'started', consumer, now, attempt, -1)
        end
      elseif refused then
        -- Dead-lettered here: the worker logs it (the reason in place of the message).
        out[nout + 1], out[nout + 2] = entry, refused == 'bad_task_id' and '' or tid
        out[nout + 3], out[nout + 4] = refused, -1
        nout = nout + 4
      elseif attempt == 0 and flow ~= '' then
        local ck = redis.call('HGET', prefix .. tid, 'ck')
        if ck then release_token(stream, group, prefix, prefix .. tid, tid, ck, now) end
      end
    end
  end
end
if redis.call('EXISTS', flow_base(stream) .. ':prio') == 1 then
  accept(take_urgent(stream, group, consumer, prefix, count))
end
-- Entries that had to wait don't fill a slot: read on, a bounded number of times.
local drained = false
for _ = 1, 8 do
  local want = count - runnable
  if want <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
    'STREAMS', stream, '>')
  if not reply then drained = true break end
  local got = #reply[1][2]
  accept(reply[1][2])
  if got < want then drained = true break end
end
if #q.done > 0 then publish(ARGV[8], table.concat(q.done, '\n')) end
flush_events()
-- The stream ran dry: one value more (the list's length is then not a multiple
-- of 4), the id of its last entry ('0-0' if none), after which every entry is
-- new. An idle worker blocks on XREAD after it with this script queued behind
-- on the same connection, so a task that arrives is fetched with no hop back.
-- That read wakes every worker waiting on the queue, and all but one run this
-- script for nothing: with more than 2 workers registered on the queue (a task
-- would then cost more script calls than the read-then-start it replaces) it is
-- not offered, and they wait in XREADGROUP, which wakes one.
if drained and redis.call('ZCARD', flow_base(stream) .. ':workers') <= 2 then
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  out[nout + 1] = top and top[1] or '0-0'
end
return out
