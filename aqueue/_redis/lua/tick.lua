-- Claim one tick of a periodic task and enqueue its run, atomically, so any
-- number of schedulers (one per worker) enqueue each tick exactly once.
-- KEYS: periodic (last claimed tick, ms), stream
-- ARGV: task_prefix, tick_ms, task_id, task_name, payload,
--   unique_key ('' for none), unique_ttl_ms
-- Returns {outcome, task_id}, outcome one of:
--   'enqueued'  this call claimed the tick and enqueued task_id
--   'claimed'   the tick (or a later one) was claimed before; nothing done
--   'new'       first tick ever seen for this schedule: recorded, not run
--   'skipped'   claimed, but the unique key's holder (returned) is still live
local pkey, stream = KEYS[1], KEYS[2]
local prefix, tick = ARGV[1], tonumber(ARGV[2])
events_from(2)
local last = redis.call('GET', pkey)
if last and tonumber(last) >= tick then return {'claimed', ''} end
redis.call('SET', pkey, ARGV[2])  -- the tick's text, as sent
if not last then return {'new', ''} end
local tid, name, payload = ARGV[3], ARGV[4], ARGV[5]
local ukey, uttl = ARGV[6], ARGV[7]
if ukey ~= '' then
  local owner = live_owner(prefix, ukey)
  if owner then return {'skipped', owner} end
end
-- The same routine as enqueue.lua, always into the stream (never delayed).
local now = now_ms()
enqueue_one(stream, '', '', prefix, tid, name, payload, true, 0, ukey, uttl,
  string.format('%d', now))
emit(prefix .. tid, tid, 'queued', '', now)
flush_events()
return {'enqueued', tid}
