-- The test clock (aqueue.testing): loaded only by a broker a test gave a
-- clock, as a variant of each script; production scripts never contain it.
-- The caller passes "now" in ms as one extra, last argument: it is taken off
-- ARGV here, so the script below sees its usual arguments, and `now_ms`
-- returns it instead of Redis' TIME.
local CLOCK_MS = tonumber(ARGV[#ARGV])
local ARGV = (function(given)
  local kept = {}
  for i = 1, #given - 1 do kept[i] = given[i] end
  return kept
end)(ARGV)
local function now_ms()
  return CLOCK_MS
end

