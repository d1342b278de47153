-- Take over work whose worker died or hung.
-- First the entries of consumers whose heartbeat is gone (at once), then any
-- entry idle longer than the visibility timeout (XAUTOCLAIM). An entry
-- delivered more than max_deliveries times goes to the dead-letter stream.
-- KEYS: stream, workers, dead, outbox (workflows)
-- ARGV: group, consumer, visibility_ms, dead_after_ms, count, max_deliveries,
--   task_prefix, result_ttl_ms, done_channel, dead_maxlen
-- Returns a flat list: entry_id, fields, deliveries, attempt, ... for entries
-- to run (already marked running).
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
      -- one still registered died without a word (issue 13: events).
      if beat then
        emit_worker('worker_offline', name, now, 'WorkerLost',
          'no heartbeat for ' .. (now - tonumber(beat)) .. ' ms')
      end
    end
  end
end

local out, done = {}, {}
for _, e in ipairs(claimed) do
  local entry, fields = e[1], e[2]
  if fields then
    local p = redis.call('XPENDING', stream, group, entry, entry, 1)
    local deliveries = p[1] and p[1][4] or 1
    local tid, payload = entry_fields(fields)
    if deliveries > max_deliveries then
      redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'id', tid, 'm', payload,
        'reason', 'max_deliveries',
        'error', 'delivered ' .. deliveries .. ' times without finishing (worker crashed or hung each time)',
        'at', now, 'attempt', deliveries, 'entry', entry)
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
      if tid ~= '' then
        -- workflows (issue 12) >>> a dead-lettered step still ends its workflow: the
        -- forwarder turns its message into the hand-off its worker never wrote
        redis.call('XADD', KEYS[4], '*', 'dead', payload, 'deliveries', deliveries)
        -- <<< workflows
        local rec = prefix .. tid
        redis.call('HSET', rec, 'state', 'dead', 'finished', now, 'error', '')
        emit(rec, tid, 'dead', consumer, now, cmsgpack.pack({'MaxDeliveries',
          'delivered ' .. deliveries .. ' times without finishing'}))
        redis.call('PEXPIRE', rec, ttl)
        release_unique(rec, tid)
        done[#done + 1] = tid
      end
    else
      -- Marked here, atomically with the claim, so the record names the new
      -- owner before the old one could try to finish (see finish.lua).
      local attempt = 1
      if tid ~= '' then
        attempt = mark_started(stream, group, prefix .. tid, entry, consumer, now)
        if EVENTS and attempt > 0 then
          emit('', tid, 'started', consumer, now, nil, false,
            STARTED_NAME, attempt, now)
        end
      end
      if attempt > 0 then
        out[#out + 1] = entry
        out[#out + 1] = fields
        out[#out + 1] = deliveries
        out[#out + 1] = attempt
      end
    end
  end
end
if #done > 0 then redis.call('PUBLISH', channel, table.concat(done, '\n')) end
flush_events()
return out
