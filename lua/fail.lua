-- fail.lua @prelude
-- Ends a held step's attempt with an error: retried (back to pending) while
-- attempts < max_attempts, else into the failed set with the retention TTL.
-- ARGV[3] id  ARGV[4] token  ARGV[5] error text  ARGV[6] retention in ms
-- Returns 1 when the step failed for good, 0 when it will be retried.
-- Errors: STEPQ_NOTFOUND, STEPQ_CONFLICT (token does not hold it).
local id = ARGV[3]
local side, w = held_step(id, ARGV[4])
return retry_or_fail(id, side, w, 'retried', ARGV[5], ARGV[6])
