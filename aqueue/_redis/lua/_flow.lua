-- Flow control (priorities, rate and concurrency limits), shared by the
-- scripts that enqueue, fetch, finish and move tasks. A queue that uses none
-- of it pays one EXISTS per fetch and nothing per task.
--
-- Keys, all beside the queue's stream under its hash tag:
--   <base>:prio          sorted set of waiting urgent task ids (score: level, then order)
--   <base>:prio:m        hash task id -> message of every id in <base>:prio
--   <base>:prio:seq      counter keeping first-in first-out order within a level
--   <base>:pstream       the stream urgent entries are delivered from; its ids are
--                        0-1, 0-2, ... (counted by <base>:pstream:seq) so an entry
--                        id tells its stream
--   <base>:conc:<key>    sorted set of the task ids holding a concurrency token
--   <base>:climit        hash key -> concurrency limit (for releases)
--   <base>:wait:<key>    list of task ids waiting for a token, oldest first
--   <base>:held          hash task id -> message of every waiting task
--   <base>:waitkeys      set of keys with a non-empty waiting list
--   <base>:rate:<key>    the next free start time of a rate limit (ms)
-- A task's record keeps `pri` (its level) and `f` (its limits) so that a
-- delayed, retried, parked or reclaimed task keeps both.

local function flow_base(stream) return string.sub(stream, 1, -8) end  -- strip ':stream'

-- The stream an entry id belongs to: urgent entries have ids 0-N.
local function stream_of(stream, entry)
  if string.sub(entry, 1, 2) == '0-' then return flow_base(stream) .. ':pstream' end
  return stream
end

-- Whether the queue's stream has entries no worker has read yet.
local function has_backlog(stream, group)
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not top then return false end
  local last = '0-0'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then last = info['last-delivered-id'] end
  end
  local tms, tseq = id_parts(top[1])
  local lms, lseq = id_parts(last)
  return tms > lms or (tms == lms and tseq > lseq)
end

-- Put a task where it waits its turn by level. Idle workers block on the
-- queue's stream, so when nothing waits there a bell entry (no task, dropped
-- by whoever reads it) wakes one, whose next fetch takes the urgent task.
local function route(stream, group, rec, tid, payload, pri, flow)
  local base = flow_base(stream)
  local prio = base .. ':prio'
  if redis.call('EXISTS', prio) == 0 and not has_backlog(stream, group) then
    redis.call('XADD', stream, '*', 'bell', '1')
  end
  local seq = redis.call('INCR', base .. ':prio:seq')
  redis.call('ZADD', prio, string.format('%d', (9 - pri) * 1e13 + seq), tid)
  redis.call('HSET', base .. ':prio:m', tid, payload)
end

-- Enqueue one message with a priority or limits (see enqueue_one for the rest;
-- `now` is never false here).
local function enqueue_flow(stream, delayed, payloads, prefix, tid, name, payload, fresh, delay,
                            ukey, uttl, now, pri, flow, group)
  local rec = prefix .. tid
  if fresh then redis.call('DEL', rec) end
  if ukey ~= '' then
    redis.call('SET', ukey, tid, 'PX', string.format('%d', uttl))
    redis.call('HSET', rec, 'ukey', ukey)
  end
  redis.call('HSET', rec, 'pri', string.format('%d', pri), 'f', flow)
  if delay > 0 then
    local eta = string.format('%d', now + delay)
    redis.call('ZADD', delayed, eta, tid)
    redis.call('HSET', payloads, tid, payload)
    redis.call('HSET', rec, 'state', 'scheduled', 'name', name, 'enq', now, 'eta', eta)
    return redis.call('ZRANGE', delayed, 0, 0)[1] == tid
  end
  redis.call('HSET', rec, 'state', 'queued', 'name', name, 'enq', now)
  if pri > 0 then
    route(stream, group, rec, tid, payload, pri, flow)
  else
    redis.call('XADD', stream, '*', 'id', tid, 'm', payload, 'f', flow)
  end
  return false
end

-- Move up to `want` urgent tasks, most urgent first, into the urgent stream
-- and read them for `consumer`. Returns the entries as XREADGROUP does.
local function take_urgent(stream, group, consumer, prefix, want)
  local base = flow_base(stream)
  local prio, msgs, pstream = base .. ':prio', base .. ':prio:m', base .. ':pstream'
  local tids = redis.call('ZRANGE', prio, 0, want - 1)
  if #tids == 0 then return {} end
  if redis.call('EXISTS', pstream) == 0 then
    redis.call('XGROUP', 'CREATE', pstream, group, '0', 'MKSTREAM')
  end
  local payloads = redis.call('HMGET', msgs, unpack(tids))
  redis.call('ZREM', prio, unpack(tids))
  redis.call('HDEL', msgs, unpack(tids))
  for i, tid in ipairs(tids) do
    local payload = payloads[i]
    if payload then
      local flow = redis.call('HGET', prefix .. tid, 'f') or ''
      -- Explicit ids (not 0-*, which needs Redis 7) from a counter of its own.
      local id = '0-' .. redis.call('INCR', pstream .. ':seq')
      redis.call('XADD', pstream, id, 'id', tid, 'm', payload, 'f', flow)
    end
  end
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
    'STREAMS', pstream, '>')
  if not reply then return {} end
  return reply[1][2]
end

-- A task's limits: {concurrency limit, key, rate count, rate period ms, key}.
local function flow_spec(flow)
  return cmsgpack.unpack(flow)
end

-- Whether a token of `tokens` is free, dropping tokens of tasks that no longer
-- run (finished, purged, dead-lettered, retried): a crashed worker's task keeps
-- its token until it is reclaimed and ends.
local function token_free(tokens, limit, prefix, now)
  if redis.call('ZCARD', tokens) < limit then return true end
  local held = redis.call('ZRANGE', tokens, 0, -1, 'WITHSCORES')
  local n = #held / 2
  for i = 1, #held, 2 do
    local tid, since = held[i], tonumber(held[i + 1])
    local state = redis.call('HGET', prefix .. tid, 'state')
    -- A token handed to a waiting task is kept for it for a minute.
    if state ~= 'running' and not (state == 'queued' and now - since < 60000) then
      redis.call('ZREM', tokens, tid)
      n = n - 1
    end
  end
  return n < limit
end

-- Hand freed tokens of `ckey` to the tasks waiting for them, oldest first.
local function release_waiting(stream, group, prefix, ckey, now)
  local base = flow_base(stream)
  local waitl, tokens = base .. ':wait:' .. ckey, base .. ':conc:' .. ckey
  if redis.call('LLEN', waitl) == 0 then return end
  local limit = tonumber(redis.call('HGET', base .. ':climit', ckey) or 0)
  while redis.call('LLEN', waitl) > 0 and token_free(tokens, limit, prefix, now) do
    local tid = redis.call('LPOP', waitl)
    local payload = redis.call('HGET', base .. ':held', tid)
    redis.call('HDEL', base .. ':held', tid)
    if payload then
      local rec = prefix .. tid
      local seen = redis.call('HMGET', rec, 'pri', 'f', 'state', 'attl')
      if seen[3] == 'queued' then
        redis.call('ZADD', tokens, now, tid)
        route(stream, group, rec, tid, payload, tonumber(seen[1]) or 0, seen[2] or '')
      elseif seen[4] then
        redis.call('PEXPIRE', rec, seen[4])  -- aborted while it waited
      end
    end
  end
  if redis.call('LLEN', waitl) == 0 then redis.call('SREM', base .. ':waitkeys', ckey) end
end

-- A task ended or goes to retry: its concurrency token frees, and the next
-- waiting task of its key gets it.
local function release_token(stream, group, prefix, rec, tid, ckey, now)
  local base = flow_base(stream)
  redis.call('ZREM', base .. ':conc:' .. ckey, tid)
  release_waiting(stream, group, prefix, ckey, now)
end

-- Tokens also free without a finish (a task aborted or dead-lettered while it
-- held one): the promote loop calls this now and then.
local function release_all_waiting(stream, group, prefix, now)
  local base = flow_base(stream)
  if redis.call('EXISTS', base .. ':waitkeys') == 0 then return end
  for _, ckey in ipairs(redis.call('SMEMBERS', base .. ':waitkeys')) do
    release_waiting(stream, group, prefix, ckey, now)
  end
end

-- Whether a delivered entry with limits may start now. If not it leaves the
-- stream (acknowledged and deleted) and waits in Redis: for a concurrency
-- token at the end of its key's waiting list, or, for a rate limit, in the
-- delayed set until the start time reserved for it. The token is looked at
-- first, so a task that waits for one uses up no start of its rate. Returns
-- true when it may start (holding a token when it has a concurrency limit).
local function admit(stream, group, prefix, entry, tid, payload, flow, now)
  local spec = flow_spec(flow)
  local climit, ckey, rcount, rperiod, rkey = spec[1], spec[2], spec[3], spec[4], spec[5]
  local base = flow_base(stream)
  local rec = prefix .. tid
  local estream = stream_of(stream, entry)
  local seen = redis.call('HMGET', rec, 'state', 'rsv')
  if seen[1] == 'aborted' then return true end  -- dropped unrun
  local tokens = base .. ':conc:' .. ckey
  if climit > 0 and not redis.call('ZSCORE', tokens, tid) then
    local waitl = base .. ':wait:' .. ckey
    if redis.call('LLEN', waitl) > 0 or not token_free(tokens, climit, prefix, now) then
      redis.call('XACK', estream, group, entry)
      redis.call('XDEL', estream, entry)
      redis.call('RPUSH', waitl, tid)
      redis.call('HSET', base .. ':held', tid, payload)
      redis.call('SADD', base .. ':waitkeys', ckey)
      redis.call('HSET', base .. ':climit', ckey, climit)
      emit(rec, tid, 'queued', '', now)  -- still queued, now waiting for a token
      return false
    end
  end
  if rcount > 0 then
    if seen[2] then
      redis.call('HDEL', rec, 'rsv')  -- started at its reserved time
    else
      local rk = base .. ':rate:' .. rkey
      local interval = rperiod / rcount
      local nxt = tonumber(redis.call('GET', rk) or 0)
      -- Redis' clock counts milliseconds: starts within the current one are on time.
      -- (Times are formatted here: Lua would round the fraction away.)
      if nxt >= now + 1 then
        -- Over the rate: reserve the next free start time and wait for it.
        redis.call('SET', rk, string.format('%.3f', nxt + interval), 'PX',
          math.floor(nxt + interval - now + rperiod))
        redis.call('XACK', estream, group, entry)
        redis.call('XDEL', estream, entry)
        local delayed, at = base .. ':delayed', math.ceil(nxt)
        redis.call('ZADD', delayed, at, tid)
        redis.call('HSET', base .. ':delayed:payloads', tid, payload)
        redis.call('HSET', rec, 'state', 'scheduled', 'eta', at, 'rsv', 1)
        emit(rec, tid, 'scheduled', '', now)
        if redis.call('ZRANGE', delayed, 0, 0)[1] == tid then
          -- Wake the queue's promoter, whichever way its workers listen (a
          -- sharded channel on Cluster, a plain one elsewhere).
          publish(base .. ':control', 'delayed')
          if redis.REDIS_VERSION_NUM then publish('!' .. base .. ':control', 'delayed') end
        end
        return false
      end
      redis.call('SET', rk, string.format('%.3f', math.max(nxt, now) + interval), 'PX',
        math.floor(interval + rperiod))
    end
  end
  if climit > 0 then
    redis.call('ZADD', tokens, now, tid)
    redis.call('HSET', rec, 'ck', ckey)
  end
  return true
end

-- Purge: urgent tasks and tasks waiting for a token are waiting work too.
-- `abort_record(tid, states)` marks one aborted. Returns how many were removed.
local function purge_flow(stream, limit, abort_record)
  local base = flow_base(stream)
  local n = 0
  for _, tid in ipairs(redis.call('ZRANGE', base .. ':prio', 0, limit - 1)) do
    redis.call('ZREM', base .. ':prio', tid)
    redis.call('HDEL', base .. ':prio:m', tid)
    abort_record(tid, {queued = true})
    n = n + 1
  end
  if redis.call('EXISTS', base .. ':waitkeys') == 0 then return n end
  for _, ckey in ipairs(redis.call('SMEMBERS', base .. ':waitkeys')) do
    local waitl = base .. ':wait:' .. ckey
    while n < limit do
      local tid = redis.call('LPOP', waitl)
      if not tid then break end
      redis.call('HDEL', base .. ':held', tid)
      abort_record(tid, {queued = true})
      n = n + 1
    end
    if redis.call('LLEN', waitl) == 0 then redis.call('SREM', base .. ':waitkeys', ckey) end
  end
  return n
end

-- A worker leaves: its urgent entries not run (or not finished in the grace
-- period) go back to wait by their level at once, like the stream's in
-- leave.lua; `kept` entries stay leased. Returns how many were handed back.
local function hand_back_urgent(stream, group, consumer, prefix, kept, forget)
  local pstream = flow_base(stream) .. ':pstream'
  if redis.call('EXISTS', pstream) == 0 then return 0 end
  local n = 0
  local start = '-'
  while true do
    local pending = redis.call('XPENDING', pstream, group, start, '+', 100, consumer)
    if #pending == 0 then break end
    for _, p in ipairs(pending) do
      local entry = p[1]
      start = '(' .. entry
      if not kept[entry] then
        local e = redis.call('XRANGE', pstream, entry, entry)[1]
        if e then
          local tid, payload, flow = entry_fields(e[2])
          if tid ~= '' then
            local rec = prefix .. tid
            local seen = redis.call('HMGET', rec, 'state', 'pri')
            if seen[1] == 'running' then redis.call('HSET', rec, 'state', 'queued') end
            route(stream, group, rec, tid, payload, tonumber(seen[2]) or 0, flow)
            n = n + 1
          end
        end
        redis.call('XACK', pstream, group, entry)
        redis.call('XDEL', pstream, entry)
      end
    end
  end
  if forget then redis.call('XGROUP', 'DELCONSUMER', pstream, group, consumer) end
  return n
end
