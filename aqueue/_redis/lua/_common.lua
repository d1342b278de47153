-- Shared by every aqueue script (prepended when the script is loaded).

-- Redis' clock in milliseconds: every host compares times against one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "Now" when a script knows it without reading the clock: never here (false);
-- the test clock (_clock.lua) knows it.
local function known_now() return false end

-- A whole number as the text Redis stores. redis.call prints a Lua number
-- argument with '%.17g', which costs more than a small command itself; a
-- script passes hot numbers (times, attempts) through this instead. Small
-- numbers and the last time asked are kept (string.format costs as much as
-- a table lookup twenty times over).
local SMALL_TEXT = { '1', '2', '3', '4', '5', '6', '7', '8', '9' }
local LAST_INT, LAST_TEXT = nil, nil
local function int_text(n)
  local text = SMALL_TEXT[n]
  if text then return text end
  if n ~= LAST_INT then LAST_INT, LAST_TEXT = n, string.format('%d', n) end
  return LAST_TEXT
end

-- A channel whose name starts with '!' is a sharded channel (Redis Cluster):
-- SPUBLISH reaches only the node that owns the queue's slot, where PUBLISH
-- would be copied to every node of the cluster. Before Redis 7 (no sharded
-- pub/sub, and no redis.REDIS_VERSION_NUM) it falls back to PUBLISH.
local function publish(channel, message)
  if string.byte(channel, 1) ~= 33 then
    return redis.call('PUBLISH', channel, message)
  end
  if redis.REDIS_VERSION_NUM then
    return redis.call('SPUBLISH', string.sub(channel, 2), message)
  end
  return redis.call('PUBLISH', string.sub(channel, 2), message)
end

-- Batches arrive as two arguments, so a batch of thousands is cheap to send:
-- a msgpack array of rows (strings and numbers, which cmsgpack reads) where
-- each binary field is replaced by its length, and one blob of those binary
-- fields back to back. `cut` takes the next binary field off the blob.
local function cut(blob, pos, len)
  return string.sub(blob, pos, pos + len - 1), pos + len
end

-- The name of the task mark_seen_started last marked running: its started
-- event's name, read with the record's state at no extra cost.
local STARTED_NAME = false

-- Task events --------------------------------------------------------------------
-- With events on, the broker adds the events stream after a script's own keys
-- and (queue, maxlen) after its own arguments; a script calls
-- events_from(<number of its own keys>) first and flush_events() last. Off,
-- EVENTS stays nil and emit() returns at once: no command is added. Events are
-- written by the script that makes the change, so none exists for a change
-- that did not happen. A script's events go out together, up to EVENT_CHUNK
-- per stream entry, so a batch of a hundred outcomes costs one XADD.
-- Field 'e' holds layout 3, text rather than msgpack (packing cost ~450
-- instructions a value): '3', queue, worker, at ms, then six values
-- per event: task id, name, state, attempt, duration ms (-1: none), error (''
-- or its type, a newline, its message), all joined by byte 0xFF, which never
-- occurs in UTF-8 text (task ids are checked; names, queues, workers and
-- errors come from Python strings). One table.concat makes the entry: a
-- string made in Redis' Lua costs about 9 instructions a byte (callgrind),
-- so no part of an entry is made as a string of its own first, but for the
-- tails (see event_entry), which a batch's events share. The events of an entry share its worker and time
-- (a new entry starts where they differ). Readers also take layouts 1 and 2
-- of older workers (msgpack arrays). MAXLEN counts entries, so the stream
-- holds at most about events_maxlen * EVENT_CHUNK events.
local EVENTS, EVENTS_QUEUE, EVENTS_MAXLEN = nil, '', 0
local EVENT_CHUNK, EVENT_HEAD, EVENT_SEP = 100, 4, '\255'
-- The entries made so far (strings); the one being filled has EVENT_COUNT
-- events of worker EVENT_WORKER at EVENT_AT in EVENT_VALUES, which is reused
-- from entry to entry (only its first values up to the last event count).
local EVENT_ENTRIES, EVENT_VALUES, EVENT_COUNT = {}, {}, 0
local EVENT_WORKER, EVENT_AT = nil, nil
-- Numbers as text, each formatted once per script call.
local EVENT_NUMBERS = { [-1] = '-1', [0] = '0', [1] = '1', [2] = '2', [3] = '3' }
local function event_number(n)
  local text = EVENT_NUMBERS[n]
  if text then return text end
  if n == math.floor(n) then text = string.format('%d', n) else text = tostring(n) end
  EVENT_NUMBERS[n] = text
  return text
end

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

-- The entry being filled, as text (see layout 3 above). Each event is two
-- values in EVENT_VALUES: its task id, then the rest of its values already
-- joined (its "tail"), which the events of a batch mostly share.
local function event_entry()
  return table.concat(EVENT_VALUES, EVENT_SEP, 1, EVENT_HEAD + EVENT_COUNT * 2)
end

-- Where the next event's two values go: the index before its first.
local function event_slot(worker, at)
  if EVENT_COUNT == EVENT_CHUNK or worker ~= EVENT_WORKER or at ~= EVENT_AT then
    if EVENT_COUNT > 0 then EVENT_ENTRIES[#EVENT_ENTRIES + 1] = event_entry() end
    local v = EVENT_VALUES
    v[1], v[2], v[3], v[4] = '3', EVENTS_QUEUE, worker, event_number(at)
    EVENT_COUNT, EVENT_WORKER, EVENT_AT = 0, worker, at
  end
  EVENT_COUNT = EVENT_COUNT + 1
  return EVENT_HEAD + EVENT_COUNT * 2 - 2
end

-- An event's values after its task id, joined: name, state, attempt,
-- duration ms (-1: none), error ('' or its type, a newline, its message).
local function event_tail(name, state, attempt, duration, error)
  return table.concat({ name, state, event_number(attempt), event_number(duration), error },
    EVENT_SEP)
end

-- One task event. `err` is a stored error (a msgpack array of type, message,
-- traceback); the event keeps its type and message. `name`, `attempt`,
-- `started` (ms or false): given when the script has them at hand (name nil:
-- read from the record `rec`, which is otherwise unused). `timed`: the end
-- of a run, whose duration is measured from its start.
local function emit(rec, tid, state, worker, now, err, timed, name, attempt, started)
  if not EVENTS then return end
  if name == nil then
    local r = redis.call('HMGET', rec, 'name', 'attempt', 'started')
    name, attempt, started = r[1], r[2], r[3]
  end
  local duration = -1
  if timed and started then duration = now - tonumber(started) end
  local etext = ''
  if err and err ~= '' then
    local ok, info = pcall(cmsgpack.unpack, err)
    if ok and type(info) == 'table' then
      etext = tostring(info[1] or '') .. '\n' .. tostring(info[2] or '')
      if etext == '\n' then etext = '' end
    end
  end
  local n = event_slot(worker or '', now)
  EVENT_VALUES[n + 1] = tid or ''
  EVENT_VALUES[n + 2] = event_tail(name or '', state, tonumber(attempt) or 0, duration, etext)
end

-- The last tail emit_plain made, and what it was made of.
local PLAIN_TAIL, PLAIN_NAME, PLAIN_STATE, PLAIN_ATTEMPT, PLAIN_DURATION = nil, nil, nil, nil, nil

-- A task event without an error whose values the script has at hand (a task
-- queued, scheduled, started, or succeeded with its run time): emit's checks
-- and conversions left out, as these come once per task; the caller checks
-- EVENTS. `name` may be false; `duration` is -1 for none. The events of a
-- batch mostly share all but their task id: their tail is joined once.
local function emit_plain(tid, name, state, worker, now, attempt, duration)
  local n = EVENT_COUNT
  if n == EVENT_CHUNK or worker ~= EVENT_WORKER or now ~= EVENT_AT then
    n = event_slot(worker, now)
  else
    EVENT_COUNT = n + 1
    n = EVENT_HEAD + n * 2
  end
  local tail = PLAIN_TAIL
  if name ~= PLAIN_NAME or state ~= PLAIN_STATE or attempt ~= PLAIN_ATTEMPT
      or duration ~= PLAIN_DURATION then
    tail = event_tail(name or '', state, attempt, duration, '')
    PLAIN_TAIL, PLAIN_NAME, PLAIN_STATE, PLAIN_ATTEMPT, PLAIN_DURATION =
      tail, name, state, attempt, duration
  end
  EVENT_VALUES[n + 1], EVENT_VALUES[n + 2] = tid, tail
end

-- A worker's event (not a task's), e.g. worker_offline for a worker that died.
local function emit_worker(state, worker, now, etype, emsg)
  if not EVENTS then return end
  local n = event_slot(worker, now)
  local etext = ''
  if etype ~= '' or emsg ~= '' then etext = etype .. '\n' .. emsg end
  EVENT_VALUES[n + 1], EVENT_VALUES[n + 2] = '', event_tail('', state, 0, -1, etext)
end

local function flush_events()
  if not EVENTS then return end
  if EVENT_COUNT > 0 then EVENT_ENTRIES[#EVENT_ENTRIES + 1] = event_entry() end
  for _, entry in ipairs(EVENT_ENTRIES) do
    redis.call('XADD', EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', entry)
  end
  EVENT_ENTRIES, EVENT_COUNT, EVENT_WORKER, EVENT_AT = {}, 0, nil, nil
end

-- The task id, message and limits (flow control) of a stream entry's field
-- list ('' when missing), and the deliveries it had before a hand-back gave it
-- a new entry ('d', 0).
local function entry_fields(fields)
  local tid, payload, flow, before = '', '', '', 0
  for j = 1, #fields, 2 do
    local f = fields[j]
    if f == 'id' then tid = fields[j + 1] elseif f == 'm' then payload = fields[j + 1]
    elseif f == 'f' then flow = fields[j + 1]
    elseif f == 'd' then before = math.max(0, tonumber(fields[j + 1]) or 0) end
  end
  return tid, payload, flow, before
end

-- The stream an entry lives in: urgent entries (flow control; ids 0-N) live
-- in the queue's urgent stream beside the main one.
local function entry_stream(stream, entry)
  if string.sub(entry, 1, 2) == '0-' and string.sub(stream, -7) == ':stream' then
    return string.sub(stream, 1, -8) .. ':pstream'
  end
  return stream
end

-- Workflows: a workflow step that ends without running (aborted or
-- purged while it waited) leaves its message in the queue's outbox, so the
-- forwarder ends its chain or counts it in its chord (aqueue.runtime.workflow).
-- Only workflow steps: the last two fields of their envelope (a msgpack
-- array, after an optional signature of 7 + 32 bytes), `then` and `member`,
-- are not both nil. Producers write all sixteen fields, so the array's size
-- can't tell: a message is unpacked here (only on the rare paths that end a
-- task unrun: abort, purge, dead letter); one that can't be read is left to
-- the forwarder to judge.
local function is_workflow_step(payload)
  local at = 1
  if string.sub(payload, 1, 7) == '\167aqsig1' then at = 40 end
  local head = string.byte(payload, at)
  if not head then return false end
  if head == 0x9f then return true end  -- 15 fields: `then` is the last one written
  if head ~= 0xdc and head ~= 0xdd then return false end  -- 14 fields or fewer
  local ok, env = pcall(cmsgpack.unpack, at == 1 and payload or string.sub(payload, at))
  if not ok or type(env) ~= 'table' then return true end
  return env[15] ~= nil or env[16] ~= nil
end

local function step_ended(outbox, payload, state, err)
  if outbox and payload and is_workflow_step(payload) then
    redis.call('XADD', outbox, '*', 'ended', state, 'm', payload, 'error', err or '')
  end
end

-- Mark a delivered entry running; returns its attempt number, or 0 when the
-- task was aborted while it waited (the entry is then acked and removed).
-- `seen`: the record's state, attempt and (events on) name, read by the caller
-- (record_seen).
-- `outbox` and `payload` (nil: read from the stream) let an aborted workflow
-- step end its workflow.
local function mark_seen_started(stream, group, rec, entry, consumer, now, seen, outbox, payload)
  if seen[1] == 'aborted' then
    stream = entry_stream(stream, entry)
    if outbox then
      if not payload then
        local e = redis.call('XRANGE', stream, entry, entry)
        if e[1] then payload = select(2, entry_fields(e[1][2])) end
      end
      step_ended(outbox, payload, 'aborted', redis.call('HGET', rec, 'error'))
    end
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    -- Aborted while queued: the record was kept for this moment; now it expires.
    local attl = redis.call('HGET', rec, 'attl')
    if attl then redis.call('PEXPIRE', rec, attl) end
    return 0
  end
  local attempt = (tonumber(seen[2]) or 0) + 1
  redis.call('HSET', rec, 'state', 'running', 'started', int_text(now), 'worker', consumer,
    'entry', entry, 'attempt', int_text(attempt))
  STARTED_NAME = seen[3]  -- the started event's name
  return attempt
end

-- What mark_seen_started reads of a record: only what it uses (each field
-- read costs as much as a small command).
local function record_seen(rec)
  if EVENTS then return redis.call('HMGET', rec, 'state', 'attempt', 'name') end
  return redis.call('HMGET', rec, 'state', 'attempt')
end

local function mark_started(stream, group, rec, entry, consumer, now, outbox, payload)
  local seen = record_seen(rec)
  return mark_seen_started(stream, group, rec, entry, consumer, now, seen, outbox, payload)
end

local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- Drop acknowledged entries from the head of the stream: everything older
-- than both the oldest pending entry and the group's last delivered entry has
-- been delivered and acknowledged. One XTRIM per batch is much cheaper than an
-- XDEL per entry.
-- While something is pending (nearly always, as workers read ahead), the
-- oldest pending entry is the bound by itself: a pending entry was delivered,
-- so it is never past the group's last delivered entry (groups are created at
-- 0 and never set back, and aqueue never claims an entry that was not
-- delivered), and the group's description (XINFO GROUPS, which costs more)
-- is read only when nothing is pending. (pcall: a stream or group that is
-- gone takes the same path as before, and fails or returns as it did.)
local function trim_acked(stream, group)
  local pending = redis.pcall('XPENDING', stream, group)
  if pending[1] and pending[1] > 0 then
    redis.call('XTRIM', stream, 'MINID', pending[2])
    return
  end
  local upto
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then upto = info['last-delivered-id'] end
  end
  if not upto then return end
  local ums, useq = id_parts(upto)
  if not ums then return end
  -- Nothing pending (the group exists, so XPENDING answered 0 above): the
  -- last delivered entry is acknowledged too.
  redis.call('XTRIM', stream, 'MINID', string.format('%d-%d', ums, useq + 1))
end

-- One finished task in a completion push: task id, state and (when small) the
-- result or error, each length-prefixed; an empty body means "read the record".
-- Waiters then need no extra round trip for small results.
local INLINE_LIMIT = 1024
local function push_frame(tid, state, body)
  if #body > INLINE_LIMIT then body = '' end
  -- c0: a string as long as it is
  return struct.pack('>I4c0I4c0I4c0', #tid, tid, #state, state, #body, body)
end

-- The same frame as the one above, added to `parts` as six strings after
-- index `n` (returns the new count), for a batch that joins its frames with
-- one table.concat: the lengths' four bytes are made once per script call
-- for each length met (task ids mostly share theirs), where a struct.pack
-- per frame made (and hashed) a string of its own (about 900 instructions
-- a task more). (Not named here: a helper a comment names comes along in
-- every script that carries this one, and each costs its script a closure
-- per call.)
local FRAME_LENGTHS = {}
local function frame_length(len)
  local text = FRAME_LENGTHS[len]
  if not text then
    text = struct.pack('>I4', len)
    FRAME_LENGTHS[len] = text
  end
  return text
end
local function add_push_frame(parts, n, tid, state, body)
  if #body > INLINE_LIMIT then body = '' end
  parts[n + 1], parts[n + 2] = FRAME_LENGTHS[#tid] or frame_length(#tid), tid
  parts[n + 3], parts[n + 4] = FRAME_LENGTHS[#state] or frame_length(#state), state
  parts[n + 5], parts[n + 6] = FRAME_LENGTHS[#body] or frame_length(#body), body
  return n + 6
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
  if not fresh then return redis.call('HEXISTS', rec, 'state') == 1 end
  local seen = redis.call('HMGET', rec, 'state', 'etok')
  if not seen[1] then return false end
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
-- `now` is the time in ms as text, made once per script: redis.call prints a
-- Lua number with '%.17g', which costs more than a small command. It may be
-- false for a message without delay: its record then takes the time of its
-- stream entry's id (Redis' clock as well), so a lone enqueue needs no TIME.
local function enqueue_one(stream, delayed, payloads, prefix, tid, name, payload, fresh, delay,
                           ukey, uttl, now)
  local rec = prefix .. tid
  if fresh then redis.call('DEL', rec) end
  if ukey ~= '' then
    redis.call('SET', ukey, tid, 'PX', string.format('%d', uttl))
    redis.call('HSET', rec, 'ukey', ukey)
  end
  if delay > 0 then
    local eta = string.format('%d', now + delay)
    redis.call('ZADD', delayed, eta, tid)
    redis.call('HSET', payloads, tid, payload)
    redis.call('HSET', rec, 'state', 'scheduled', 'name', name, 'enq', now, 'eta', eta)
    return redis.call('ZRANGE', delayed, 0, 0)[1] == tid
  end
  local entry = redis.call('XADD', stream, '*', 'id', tid, 'm', payload)
  redis.call('HSET', rec, 'state', 'queued', 'name', name,
    'enq', now or string.match(entry, '^%d+'))
  return false
end

-- The door of every delivery (fetch, start, reclaim) -------------------------
-- The id a message's envelope carries (its second field), read from the
-- msgpack bytes (after the signature, when signed) without decoding the rest;
-- nil when the bytes are not an envelope (the worker dead-letters those).
local SIGNATURE_MARK = '\167aqsig1'
local SIGNED_HEAD = #SIGNATURE_MARK + 32
local function envelope_id(payload)
  local pos = 1
  if string.sub(payload, 1, #SIGNATURE_MARK) == SIGNATURE_MARK then pos = pos + SIGNED_HEAD end
  local b = string.byte(payload, pos)
  if b == nil then return nil end
  if b >= 0x90 and b <= 0x9f then pos = pos + 1
  elseif b == 0xdc then pos = pos + 3
  elseif b == 0xdd then pos = pos + 5
  else return nil end
  b = string.byte(payload, pos)  -- the version: a small unsigned integer
  if b == nil then return nil end
  if b <= 0x7f then pos = pos + 1
  elseif b == 0xcc then pos = pos + 2
  elseif b == 0xcd then pos = pos + 3
  elseif b == 0xce then pos = pos + 5
  else return nil end
  b = string.byte(payload, pos)
  if b == nil then return nil end
  local n
  if b >= 0xa0 and b <= 0xbf then n, pos = b - 0xa0, pos + 1
  elseif b == 0xd9 and pos + 1 <= #payload then n, pos = string.byte(payload, pos + 1), pos + 2
  elseif b == 0xda and pos + 2 <= #payload then
    n, pos = struct.unpack('>I2', payload, pos + 1), pos + 3
  elseif b == 0xdb and pos + 4 <= #payload then
    n, pos = struct.unpack('>I4', payload, pos + 1), pos + 5
  else return nil end
  if pos + n - 1 > #payload then return nil end
  return string.sub(payload, pos, pos + n - 1)
end

-- Whether the envelope `payload` carries the id `tid`, seen cheaply in the
-- usual shape (an array, a small version, then the id as a str of tid's
-- length); false means "look closer" (envelope_id), not "no".
-- An unsigned envelope (the usual message) is read with one string.byte: a
-- call into C costs as much as dozens of Lua steps, and this runs for every
-- delivery.
local function carries_id(payload, tid)
  local head, b2, b3, b4, b5, b6 = string.byte(payload, 1, 6)
  if b6 and (head == 0xdc or (head >= 0x90 and head <= 0x9f)) then
    local version, str, len, at = b2, b3, b4, 3  -- at: where the id's str begins
    if head == 0xdc then version, str, len, at = b4, b5, b6, 5 end
    if version > 0x7f then return false end
    if str == 0xd9 and len == #tid then at = at + 2
    elseif str == 0xa0 + #tid and #tid < 32 then at = at + 1
    else return false end
    return string.find(payload, tid, at, true) == at
  end
  local pos = 1
  if head == 167 and string.sub(payload, 1, #SIGNATURE_MARK) == SIGNATURE_MARK then
    pos = pos + SIGNED_HEAD
    head = string.byte(payload, pos)
  end
  if head == 0xdc then pos = pos + 3
  elseif head and head >= 0x90 and head <= 0x9f then pos = pos + 1
  else return false end
  local version, str, len = string.byte(payload, pos, pos + 2)
  if not len or version > 0x7f then return false end
  local at
  if str == 0xd9 and len == #tid then at = pos + 3
  elseif str == 0xa0 + #tid and #tid < 32 then at = pos + 2
  else return false end
  return string.find(payload, tid, at, true) == at
end

-- Whether `s` is well-formed UTF-8 (task ids are text; anything else could
-- not be named back by a worker).
local function is_utf8(s)
  -- ASCII, the usual case: one look at every byte (a pattern costs several
  -- times more); string.byte returns them all, so only for short ids.
  if #s <= 128 then
    if #s == 0 or math.max(string.byte(s, 1, -1)) < 128 then return true end
  elseif not string.find(s, '[\128-\255]') then
    return true
  end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local more
    if c < 0x80 then more = 0
    elseif c >= 0xc2 and c <= 0xdf then more = 1
    elseif c >= 0xe0 and c <= 0xef then more = 2
    elseif c >= 0xf0 and c <= 0xf4 then more = 3
    else return false end
    for k = 1, more do
      local cc = string.byte(s, i + k)
      if cc == nil or cc < 0x80 or cc > 0xbf then return false end
    end
    i = i + more + 1
  end
  return true
end

-- A task whose record holds one of these outcomes never runs again from the
-- same message (running it again goes through enqueue, which clears the record).
local FINAL = { succeeded = true, failed = true, dead = true, expired = true }

-- Send a delivered entry to the dead-letter stream without running it and
-- without touching any task record (the entry may name a task it is not).
local function refuse_entry(q, entry, tid, payload, reason, detail, deliveries)
  redis.call('XADD', q.dead, 'MAXLEN', '~', q.dead_maxlen, '*', 'id', tid, 'm', payload,
    'reason', reason, 'error', detail, 'at', q.now, 'attempt', deliveries, 'entry', entry)
  local stream = entry_stream(q.stream, entry)
  redis.call('XACK', stream, q.group, entry)
  redis.call('XDEL', stream, entry)
end

-- Take a delivered entry in: refuse what must not run, else mark it running.
-- `tid`, `payload`, `before`: the entry's fields (entry_fields).
-- `q` holds the queue's keys and settings: stream, group, consumer, dead,
-- dead_maxlen, outbox, prefix, ttl, max_deliveries, now, and `done` (ids
-- whose record became final here: the caller publishes them).
-- Refused (dead-lettered here; no record touched but for max_deliveries):
--   bad_task_id  the entry's id field is not text;
--   id_mismatch  the id field is not the id the message carries: a signed
--                message is bound to its own id, so a copy filed under
--                another task's id can't run, nor mark that task;
--   replayed     the task already has a final outcome: a copy of a message
--                that ran;
--   max_deliveries  delivered more times than allowed, hand-backs included.
-- `gate` (flow control; nil: none) is asked last, before the entry is marked:
-- false means it is over a rate or concurrency limit and now waits in Redis.
-- Returns the attempt number (0: aborted while it waited, -1: refused and
-- dead-lettered, -2: waiting for its limit; none of them runs), the deliveries
-- counted and, when refused, the reason.
local function take_entry(q, entry, tid, payload, before, deliveries, gate)
  local seen, rec
  deliveries = deliveries + before
  if tid ~= '' then
    rec = q.prefix .. tid  -- made once: each `..` makes (and hashes) a new string
    -- The record is read first: an id that has one is text. Records are
    -- written under ids aqueue took from Python strings, sent as UTF-8, and
    -- the key holds the id's very bytes; so only an id without a record (an
    -- entry some other writer added) is looked at byte by byte.
    seen = record_seen(rec)
    -- The usual delivery, marked running at once: a task waiting in the queue
    -- (its record, so its id, exists), its message carrying its id, within its
    -- deliveries, without limits. The same outcome as the steps below, with
    -- fewer Lua calls for every delivery.
    if seen[1] == 'queued' and not gate and deliveries <= q.max_deliveries
        and carries_id(payload, tid) then
      local attempt = 1  -- (a first delivery's record has no attempt: no tonumber)
      if seen[2] then attempt = (tonumber(seen[2]) or 0) + 1 end
      redis.call('HSET', rec, 'state', 'running', 'started', int_text(q.now),
        'worker', q.consumer, 'entry', entry, 'attempt', int_text(attempt))
      STARTED_NAME = seen[3]  -- the started event's name
      return attempt, deliveries
    end
    if not seen[1] and not is_utf8(tid) then
      refuse_entry(q, entry, '', payload, 'bad_task_id',
        "the entry's task id is not UTF-8 text", deliveries)
      return -1, deliveries, 'bad_task_id'
    end
    local eid = not carries_id(payload, tid) and envelope_id(payload)
    if eid and eid ~= tid then
      refuse_entry(q, entry, tid, payload, 'id_mismatch',
        'the entry names task ' .. tid .. ' but its message is task ' .. eid, deliveries)
      return -1, deliveries, 'id_mismatch'
    end
    if FINAL[seen[1]] then
      refuse_entry(q, entry, tid, payload, 'replayed',
        'task ' .. tid .. ' already has a final outcome; this copy of its message was not run',
        deliveries)
      return -1, deliveries, 'replayed'
    end
  end
  if deliveries > q.max_deliveries then
    refuse_entry(q, entry, tid, payload, 'max_deliveries',
      'delivered ' .. deliveries .. ' times without finishing (worker crashed or hung each time)',
      deliveries)
    if tid ~= '' then
      -- A dead-lettered workflow step still ends its workflow: the forwarder
      -- turns its message into the hand-off its worker never wrote.
      redis.call('XADD', q.outbox, '*', 'dead', payload, 'deliveries', deliveries)
      redis.call('HSET', rec, 'state', 'dead', 'finished', q.now, 'error', '')
      emit(rec, tid, 'dead', q.consumer, q.now, cmsgpack.pack({'MaxDeliveries',
        'delivered ' .. deliveries .. ' times without finishing'}))
      redis.call('PEXPIRE', rec, q.ttl)
      release_unique(rec, tid)
      q.done[#q.done + 1] = tid
    end
    return -1, deliveries, 'max_deliveries'
  end
  if tid == '' then  -- garbage: it runs into the dead-letter path
    STARTED_NAME = false  -- its started event names no task
    return 1, deliveries
  end
  if gate and not gate() then return -2, deliveries end
  return mark_seen_started(q.stream, q.group, rec, entry, q.consumer, q.now, seen,
    q.outbox, payload), deliveries
end
