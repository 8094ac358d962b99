-- backfill_guard.lua: the checks every backfill script makes before it
-- writes (included by '@part backfill_guard'; docs/migration-engine.md).
-- The backfill's preflight checks the phase once; a run can outlive it, so
-- each script checks again, atomically with its writes: a run that crossed
-- the move to 'step' (the old keys frozen and stale there) or that runs
-- while a rollback out of 'step' has not finished its reconcile (the old
-- keys miss what was written in 'step') would copy stale members into the
-- side that is read.
-- Returns the error text, or nil when the script may go on.
local function backfill_refused(rec, phase_key, owner, dry)
    local ph = redis.call('HMGET', phase_key, 'phase', 'reconciling')
    if ph[1] == 'step' then
        return "STEPQ_CONFLICT the phase moved to 'step' while this backfill ran: the old " ..
            'keys stopped changing at the switch and copying them would bring back steps ' ..
            'that ended since; nothing more was copied'
    end
    if ph[2] then
        return "STEPQ_CONFLICT a rollback out of 'step' has not finished reconciling the old " ..
            "keys (they miss what was written in 'step'); run 'stepq migrate rollback' to " ..
            'finish it, then backfill'
    end
    if not dry and redis.call('HGET', rec, 'owner') ~= owner then
        return 'STEPQ_CONFLICT another backfill process took this run over (a second ' ..
            "'stepq migrate backfill' started); let it finish. If none runs (a failover can " ..
            "lose the record's last write), run 'stepq migrate backfill' again: it resumes"
    end
    return nil
end
