-- Read up to `count` new entries without blocking and mark them running, in
-- one round trip. When it returns nothing the worker falls back to a blocking
-- XREADGROUP (scripts can't block).
-- Urgent tasks (a priority above 0) come first, most urgent first; entries
-- over a rate or concurrency limit leave the stream to wait in Redis (see
-- _flow.lua), and more entries are read in their place.
-- KEYS: stream, outbox (workflows: where an aborted step's message goes)
-- ARGV: task_prefix, group, consumer, count
-- Returns a flat list: entry_id, task_id, payload, attempt for each entry to run.
local stream = KEYS[1]
local prefix, group, consumer, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
local now = now_ms()
local function accept(entries)
  for _, e in ipairs(entries) do
    local entry, fields = e[1], e[2]
    local tid, payload, flow = entry_fields(fields)
    local attempt = 1
    if fields[1] == 'bell' then
      redis.call('XACK', stream, group, entry)  -- it woke nobody: drop it
      redis.call('XDEL', stream, entry)
    elseif flow == '' or tid == '' or admit(stream, group, prefix, entry, tid, payload, flow, now) then
      if tid ~= '' then
        attempt = mark_started(stream, group, prefix .. tid, entry, consumer, now, KEYS[2], payload)
      end
      if attempt > 0 then
        out[#out + 1] = entry
        out[#out + 1] = tid
        out[#out + 1] = payload
        out[#out + 1] = attempt
      elseif flow ~= '' then
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
for _ = 1, 8 do
  local want = count - #out / 4
  if want <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
    'STREAMS', stream, '>')
  if not reply then break end
  local got = #reply[1][2]
  accept(reply[1][2])
  if got < want then break end
end
return out
