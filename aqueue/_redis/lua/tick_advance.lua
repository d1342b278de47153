-- Mark a schedule's ticks up to a time as claimed without running them (a
-- schedule added or resumed does not fire for the past). Never moves the
-- mark back: a tick claimed once must never be claimed, and enqueued, again.
-- KEYS: periodic (last claimed tick, ms)
-- ARGV: tick_ms
local last = redis.call('GET', KEYS[1])
if not last or tonumber(last) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
