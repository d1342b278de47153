-- Shared by every aqueue script (prepended when the script is loaded).

-- Redis' clock in milliseconds: every host compares times against one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Batches arrive as two arguments, so a batch of thousands is cheap to send:
-- a msgpack array of rows (strings and numbers, which cmsgpack reads) where
-- each binary field is replaced by its length, and one blob of those binary
-- fields back to back. `cut` takes the next binary field off the blob.
local function cut(blob, pos, len)
  return string.sub(blob, pos, pos + len - 1), pos + len
end

local STARTED_NAME = false  -- task events (issue 13), see mark_started

-- Mark a delivered entry running; returns its attempt number, or 0 when the
-- task was aborted while it waited (the entry is then acked and removed).
local function mark_started(stream, group, rec, entry, consumer, now)
  local seen = redis.call('HMGET', rec, 'state', 'attempt', 'attl', 'name')
  if seen[1] == 'aborted' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    -- Aborted while queued: the record was kept for this moment; now it expires.
    if seen[3] then redis.call('PEXPIRE', rec, seen[3]) end
    return 0
  end
  local attempt = (tonumber(seen[2]) or 0) + 1
  redis.call('HSET', rec, 'state', 'running', 'started', now, 'worker', consumer, 'entry', entry,
    'attempt', attempt)
  STARTED_NAME = seen[4]  -- task events (issue 13): the started event's name
  return attempt
end

local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- Drop acknowledged entries from the head of the stream: everything older
-- than both the oldest pending entry and the group's last delivered entry has
-- been delivered and acknowledged. One XTRIM per batch is much cheaper than an
-- XDEL per entry.
local function trim_acked(stream, group)
  local upto
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then upto = info['last-delivered-id'] end
  end
  if not upto then return end
  local ums, useq = id_parts(upto)
  if not ums then return end
  local pending = redis.call('XPENDING', stream, group)
  if pending[1] > 0 then
    local pms, pseq = id_parts(pending[2])
    if pms < ums or (pms == ums and pseq <= useq) then upto = pending[2] end
  else
    -- Nothing pending: the last delivered entry is acknowledged too.
    upto = string.format('%d-%d', ums, useq + 1)
  end
  redis.call('XTRIM', stream, 'MINID', upto)
end

-- One finished task in a completion push: task id, state and (when small) the
-- result or error, each length-prefixed; an empty body means "read the record".
-- Waiters then need no extra round trip for small results.
local INLINE_LIMIT = 1024
local function push_frame(tid, state, body)
  if #body > INLINE_LIMIT then body = '' end
  return struct.pack('>I4', #tid) .. tid .. struct.pack('>I4', #state) .. state
    .. struct.pack('>I4', #body) .. body
end

-- The task id and message of a stream entry's field list ('' when missing).
local function entry_fields(fields)
  local tid, payload = '', ''
  for j = 1, #fields, 2 do
    if fields[j] == 'id' then tid = fields[j + 1] elseif fields[j] == 'm' then payload = fields[j + 1] end
  end
  return tid, payload
end

-- A task that ended frees its unique key, unless another task holds it by now.
local function release_unique(rec, tid)
  local ukey = redis.call('HGET', rec, 'ukey')
  if ukey and redis.call('GET', ukey) == tid then redis.call('DEL', ukey) end
end

-- A task in one of these states will still run, or runs now.
local function is_live(state)
  return state == 'queued' or state == 'scheduled' or state == 'running' or state == 'retrying'
end

-- The id of the live task holding a unique key, or false.
local function live_owner(prefix, ukey)
  local owner = redis.call('GET', ukey)
  if not owner then return false end
  if is_live(redis.call('HGET', prefix .. owner, 'state')) then
    return owner
  end
  return false
end

-- Exactly-once enqueue -------------------------------------------------------
-- Whether the task `rec` is already enqueued, so this message must not be
-- added again (the caller gets the task's id, as for a unique key). An id
-- aqueue drew itself (not `fresh`) is random: any record of it means this is
-- the same call sent again after its reply was lost. An id the producer chose
-- (`fresh`) is refused while that task is live, and when the record was
-- written by this very message (`etok`, the digest of its bytes, which hold
-- the id and the time of the call): a resent call whose first copy already
-- finished. A finished task's id may otherwise be enqueued again.
local function already_enqueued(rec, fresh, payload)
  local seen = redis.call('HMGET', rec, 'state', 'etok')
  if not seen[1] then return false end
  if not fresh then return true end
  return is_live(seen[1]) or seen[2] == redis.sha1hex(payload)
end

-- Remember which message wrote a producer-chosen id's record (see above).
local function mark_enqueued_by(rec, payload)
  redis.call('HSET', rec, 'etok', redis.sha1hex(payload))
end

-- Idempotent outcomes ----------------------------------------------------------
-- A finish whose reply was lost is sent again: its entry is acknowledged by
-- then, and only `fin` (the entry whose outcome the record holds) tells that
-- the outcome is already recorded, not that another worker took the task.
local function recorded_before(rec, entry)
  return redis.call('HGET', rec, 'fin') == entry
end

-- Enqueue one message: into the stream now, or into the delayed set when
-- delay > 0. `fresh` first clears an old record of the same id; a unique key
-- ('' for none) is taken for `uttl` ms. Returns true when the message became
-- the earliest delayed one (sleeping workers must be woken).
local function enqueue_one(stream, delayed, payloads, prefix, tid, name, payload, fresh, delay,
                           ukey, uttl, now)
  local rec = prefix .. tid
  if fresh then redis.call('DEL', rec) end
  if ukey ~= '' then
    redis.call('SET', ukey, tid, 'PX', uttl)
    redis.call('HSET', rec, 'ukey', ukey)
  end
  if delay > 0 then
    redis.call('ZADD', delayed, now + delay, tid)
    redis.call('HSET', payloads, tid, payload)
    redis.call('HSET', rec, 'state', 'scheduled', 'name', name, 'enq', now, 'eta', now + delay)
    return redis.call('ZRANGE', delayed, 0, 0)[1] == tid
  end
  redis.call('XADD', stream, '*', 'id', tid, 'm', payload)
  redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now)
  return false
end

-- Task events (issue 13) -------------------------------------------------------
-- With events on, the broker adds the events stream after a script's own keys
-- and (queue, maxlen) after its own arguments; a script calls
-- events_from(<number of its own keys>) first and flush_events() last. Off,
-- EVENTS stays nil and emit() returns at once: no command is added. Events are
-- written by the script that makes the change, so none exists for a change
-- that did not happen. A script's events go out together, up to EVENT_CHUNK
-- per stream entry, so a batch of a hundred outcomes costs one XADD: field 'e'
-- holds one msgpack array of EVENT_FIELDS values per event, back to back.
-- MAXLEN counts entries, so the stream holds at most about
-- events_maxlen * EVENT_CHUNK events.
local EVENTS, EVENTS_QUEUE, EVENTS_MAXLEN = nil, '', 0
local EVENT_BATCH = {}
local EVENT_FIELDS, EVENT_CHUNK = 10, 100
local function events_from(nkeys)
  EVENTS = KEYS[nkeys + 1]
  if EVENTS then EVENTS_QUEUE, EVENTS_MAXLEN = ARGV[#ARGV - 1], ARGV[#ARGV] end
  return EVENTS ~= nil
end

-- The arguments a script's events take at the end of ARGV (see events_from).
local function own_argc()
  if EVENTS then return #ARGV - 2 end
  return #ARGV
end

-- One event: queue, task id, name, state, attempt, worker, at ms, duration ms
-- (-1: none), error type, error message. `err` is a stored error (a msgpack
-- array of type, message, traceback); the event keeps its type and message.
-- `name`, `attempt`, `started` (ms or false): given when the script has them
-- at hand (name nil: read from the record `rec`, which is otherwise unused). `timed`: the end of a run, whose
-- duration is measured from its start. Each event is packed at once (no
-- table per event): the cheapest form for Lua.
local function emit(rec, tid, state, worker, now, err, timed, name, attempt, started)
  if not EVENTS then return end
  if name == nil then
    local r = redis.call('HMGET', rec, 'name', 'attempt', 'started')
    name, attempt, started = r[1], r[2], r[3]
  end
  local duration = -1
  if timed and started then duration = now - tonumber(started) end
  local etype, emsg = '', ''
  if err and err ~= '' then
    local ok, info = pcall(cmsgpack.unpack, err)
    if ok and type(info) == 'table' then
      etype, emsg = tostring(info[1] or ''), tostring(info[2] or '')
    end
  end
  EVENT_BATCH[#EVENT_BATCH + 1] = cmsgpack.pack(EVENTS_QUEUE, tid, name or '', state,
    tonumber(attempt) or 0, worker, now, duration, etype, emsg)
end

-- A worker's event (not a task's), e.g. worker_offline for a worker that died.
local function emit_worker(state, worker, now, etype, emsg)
  if not EVENTS then return end
  EVENT_BATCH[#EVENT_BATCH + 1] = cmsgpack.pack(EVENTS_QUEUE, '', '', state, 0, worker, now, -1,
    etype, emsg)
end

local function flush_events()
  if not EVENTS then return end
  for first = 1, #EVENT_BATCH, EVENT_CHUNK do
    local last = math.min(#EVENT_BATCH, first + EVENT_CHUNK - 1)
    -- A msgpack array32 header, then the events' values.
    local header = struct.pack('>BI4', 0xdd, (last - first + 1) * EVENT_FIELDS)
    redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e',
      header .. table.concat(EVENT_BATCH, '', first, last))
  end
  EVENT_BATCH = {}
end
