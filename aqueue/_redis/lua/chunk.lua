-- Streaming tasks: append one chunk to the task's capped chunk stream.
-- KEYS: chunks
-- ARGV: entry id (<attempt>-<n>, so a reader resumes exactly where it was),
--   chunk, maxlen, ttl_ms
-- An id not above the stream's last one (a chunk sent again after a lost
-- reply) is already there: it is not added twice.
-- Returns 1 when the chunk was added.
local chunks = KEYS[1]
local ok = pcall(redis.call, 'XADD', chunks, 'MAXLEN', '~', ARGV[3], ARGV[1], 'c', ARGV[2])
redis.call('PEXPIRE', chunks, ARGV[4])
if ok then return 1 end
return 0
