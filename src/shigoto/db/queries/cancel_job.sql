-- Cancel one unfinished job; returns the state it was in (empty if nothing changed).
WITH target AS (
    SELECT id, state FROM __schema__.jobs
    WHERE id = %(id)s AND state NOT IN ('completed', 'discarded', 'cancelled')
    FOR UPDATE
)
UPDATE __schema__.jobs AS j
SET state = 'cancelled', cancelled_at = now()
FROM target
WHERE j.id = target.id
RETURNING j.id, target.state::text AS previous_state,
    (CASE WHEN j.awaited THEN pg_notify('__schema__.jobs_finished', j.id::text) END)::text
        AS announced
