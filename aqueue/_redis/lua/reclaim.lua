-- Take over work whose worker died or hung.
-- First the entries of consumers whose heartbeat is gone (at once), then any
-- entry idle longer than the visibility timeout (XAUTOCLAIM). Each claimed
-- entry passes the door of take_entry: one delivered more than max_deliveries
-- times (hand-backs included) goes to the dead-letter stream, and so does one
-- whose id field is not its message's id or whose task already finished.
-- KEYS: stream, workers, dead, outbox (workflows)
-- ARGV: group, consumer, visibility_ms, dead_after_ms, count, max_deliveries,
--   task_prefix, result_ttl_ms, done_channel, dead_maxlen
-- Returns a flat list: entry_id, fields, deliveries, attempt, ... for entries
-- to run (already marked running), and with attempt -1 and fields
-- {'id', task_id, 'reason', reason} for the ones refused at the door
-- (dead-lettered here).
local stream, workers, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local visibility, dead_after = tonumber(ARGV[3]), tonumber(ARGV[4])
local count, max_deliveries = tonumber(ARGV[5]), tonumber(ARGV[6])
local prefix, ttl, channel, dead_maxlen = ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local now = now_ms()
events_from(4)

local claimed = {}
local summary = redis.call('XPENDING', stream, group)
if summary[4] then
  for _, c in ipairs(summary[4]) do
    local name = c[1]
    if name ~= consumer and count > 0 then
      local beat = redis.call('ZSCORE', workers, name)
      if not beat or now - tonumber(beat) > dead_after then
        local pending = redis.call('XPENDING', stream, group, '-', '+', count, name)
        local ids = {}
        for _, p in ipairs(pending) do ids[#ids + 1] = p[1] end
        if #ids > 0 then
          local got = redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))
          for _, e in ipairs(got) do claimed[#claimed + 1] = e end
          count = count - #ids
        end
      end
    end
  end
end
if count > 0 then
  local res = redis.call('XAUTOCLAIM', stream, group, consumer, visibility, '0-0',
    'COUNT', count)
  for _, e in ipairs(res[2]) do claimed[#claimed + 1] = e end
  -- Entries deleted from the stream while pending (res[3]) were dropped from the PEL.
end

-- Forget consumers that are gone and hold nothing.
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending = c[2], c[4]
  if name ~= consumer and pending == 0 then
    local beat = redis.call('ZSCORE', workers, name)
    if not beat or now - tonumber(beat) > dead_after then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
      redis.call('ZREM', workers, name)
      -- A worker that left by itself said so and is no longer registered;
      -- one still registered died without a word.
      if beat then
        emit_worker('worker_offline', name, now, 'WorkerLost',
          'no heartbeat for ' .. (now - tonumber(beat)) .. ' ms')
      end
    end
  end
end

-- ... and heartbeats of workers that are gone and were never (or no longer
-- are) consumers of this group: a worker killed while idle. Without this the
-- registry, and the worker count `inspect` shows, would keep them for ever.
local holding = {}
if summary[4] then
  for _, c in ipairs(summary[4]) do holding[c[1]] = true end
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', workers, '-inf', now - dead_after)) do
  if name ~= consumer and not holding[name] then
    local beat = redis.call('ZSCORE', workers, name)
    redis.call('ZREM', workers, name)
    emit_worker('worker_offline', name, now, 'WorkerLost',
      'no heartbeat for ' .. (now - tonumber(beat)) .. ' ms')
  end
end

local out = {}
local q = {
  stream = stream, group = group, consumer = consumer, dead = dead, outbox = KEYS[4],
  prefix = prefix, max_deliveries = max_deliveries, dead_maxlen = dead_maxlen, ttl = ttl,
  now = now, done = {},
}
for _, e in ipairs(claimed) do
  local entry, fields = e[1], e[2]
  if fields then
    local p = redis.call('XPENDING', stream, group, entry, entry, 1)
    -- Every entry passes the same door as a fresh one: whatever its id field
    -- says, max_deliveries applies to it (hand-backs counted).
    -- Marked here, atomically with the claim, so the record names the new
    -- owner before the old one could try to finish (see finish.lua).
    local tid, payload, _, before = entry_fields(fields)
    local attempt, deliveries, refused = take_entry(q, entry, tid, payload, before,
      p[1] and p[1][4] or 1)
    if attempt > 0 then
      out[#out + 1] = entry
      out[#out + 1] = fields
      out[#out + 1] = deliveries
      out[#out + 1] = attempt
      if EVENTS then
        emit_plain(tid ~= '' and tid or entry, STARTED_NAME, 'started', consumer, now, attempt, -1)
      end
    elseif refused then
      if refused == 'bad_task_id' then tid = '' end
      out[#out + 1] = entry
      out[#out + 1] = { 'id', tid, 'reason', refused }
      out[#out + 1] = deliveries
      out[#out + 1] = -1
    end
  end
end
local done = q.done
if #done > 0 then publish(channel, table.concat(done, '\n')) end
flush_events()
return out
