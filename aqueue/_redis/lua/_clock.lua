-- The test clock (aqueue.testing): loaded only by a broker a test gave a
-- clock, as a variant of each script; production scripts never contain it.
-- The caller passes "now" in ms as one extra, last argument: it is taken off
-- ARGV here (in place, so the shared helpers that read ARGV's end, such as
-- the events' arguments, see the usual arguments too), and `now_ms` returns
-- it instead of Redis' TIME.
local CLOCK_MS = tonumber(table.remove(ARGV))
local function now_ms()
  return CLOCK_MS
end
local function known_now()
  return CLOCK_MS
end
