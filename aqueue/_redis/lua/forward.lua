-- Workflows: apply hand-offs from a queue's outbox to the queue they belong to.
-- KEYS: stream (of the queue the steps and chords belong to)
-- ARGV: task_prefix, done_channel, result_ttl_ms, chord_prefix, rows, blob; a row
--   per hand-off: {id, name, body length, kind[, parent id, parent queue]} (the
--   step that handed it on, kept in the record of a step enqueued or failed
--   here, for the dashboard; rows of older workers have none); kind 0: enqueue task `id` with
--   the body as its message; 1: task `id` fails, never having run, with the body
--   as its error; 2: a member of chord `id` ended (name: its index, body: its
--   outcome), counted once however often it is forwarded; 3: task `id` is
--   aborted before it was enqueued, with the body as its error.
-- A step whose record exists was forwarded before (by a forwarder that stopped
-- before it dropped the hand-off, or by another worker at the same time): it is
-- left alone, so a hand-off forwarded twice never runs a step twice.
-- Returns {steps enqueued, ids of chords whose members have all ended and whose
-- callback was not enqueued yet, steps failed or aborted here}.
local stream = KEYS[1]
local prefix, channel, ttl, chords = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local now_text = string.format('%d', now)  -- redis.call would print a number with '%.17g'
events_from(1)
local rows, blob, pos = cmsgpack.unpack(ARGV[5]), ARGV[6], 1
local done, enqueued, complete, settled = {}, 0, {}, 0
-- Per chord in this call: whether it exists and how many members are new, so
-- the counter is bumped once per chord per call, not once per member.
local chord_order, chord_new = {}, {}
for _, row in ipairs(rows) do
  local id, name, kind, parent = row[1], row[2], row[4], row[5]
  if parent == '' then parent = nil end
  local body
  body, pos = cut(blob, pos, row[3])
  if kind == 2 then
    local chord = chords .. id
    if chord_new[id] == nil then
      -- A chord that is gone (fired long ago, or never made) counts nothing.
      chord_new[id] = redis.call('EXISTS', chord) == 1 and 0 or false
      chord_order[#chord_order + 1] = id
    end
    if chord_new[id] and redis.call('HSETNX', chord, 'm:' .. name, body) == 1 then
      chord_new[id] = chord_new[id] + 1
    end
  else
    local rec = prefix .. id
    if redis.call('EXISTS', rec) == 0 then
      if kind == 0 then
        redis.call('XADD', stream, '*', 'id', id, 'm', body)
        if parent then
          redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now_text,
            'parent', parent, 'pq', row[6])
        else
          redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now_text)
        end
        emit(rec, id, 'queued', '', now)
        enqueued = enqueued + 1
      else
        local state = kind == 3 and 'aborted' or 'failed'
        redis.call('HSET', rec, 'state', state, 'name', name, 'error', body, 'enq', now_text,
          'finished', now_text)
        if parent then redis.call('HSET', rec, 'parent', parent, 'pq', row[6]) end
        emit(rec, id, state, '', now, body)
        redis.call('PEXPIRE', rec, ttl)
        done[#done + 1] = push_frame(id, state, body)
        settled = settled + 1
      end
    end
  end
end
for _, id in ipairs(chord_order) do
  local new = chord_new[id]
  if new then
    local chord = chords .. id
    if new > 0 then redis.call('HINCRBY', chord, 'done', new) end
    local c = redis.call('HMGET', chord, 'n', 'done', 'fired')
    if not c[3] and tonumber(c[2]) >= tonumber(c[1]) then complete[#complete + 1] = id end
  end
end
if #done > 0 then publish(channel, '\0' .. table.concat(done)) end
flush_events()
return {enqueued, complete, settled}
