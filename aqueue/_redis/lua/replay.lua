-- Put dead-lettered messages back to work: each entry's original payload is
-- added to the stream again, its task record goes back to queued (no TTL,
-- outcome fields cleared) and the dead-letter entry is deleted, atomically.
-- KEYS: stream, dead
-- ARGV: task_prefix, then dead-letter entry ids
-- Returns, per entry id, the new stream entry id ('' when there was no such
-- dead-letter entry).
local stream, dead = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local out = {}
events_from(2)
for i = 2, own_argc() do
  local entry = ARGV[i]
  local found = redis.call('XRANGE', dead, entry, entry)[1]
  local new = ''
  if found then
    local fields = found[2]
    local tid, payload = entry_fields(fields)
    -- flow control: a replayed task keeps its limits (its record has them)
    local flow = tid ~= '' and redis.call('HGET', prefix .. tid, 'f') or ''
    if flow ~= '' then
      new = redis.call('XADD', stream, '*', 'id', tid, 'm', payload, 'f', flow)
    else
      new = redis.call('XADD', stream, '*', 'id', tid, 'm', payload)
    end
    if tid ~= '' then
      local rec = prefix .. tid
      redis.call('HDEL', rec, 'result', 'error', 'finished', 'started', 'worker', 'entry', 'eta')
      redis.call('HSET', rec, 'state', 'queued')
      redis.call('PERSIST', rec)
      if EVENTS then emit(rec, tid, 'queued', '', now_ms()) end
    end
    redis.call('XDEL', dead, entry)
  end
  out[#out + 1] = new
end
flush_events()
return out
