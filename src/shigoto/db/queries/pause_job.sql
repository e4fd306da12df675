-- Pause one job so that no node claims it. A waiting job becomes `paused` at once; a
-- running one stays `executing` until its node, told by a signal, interrupts it and
-- writes it back as `paused` with its attempt refunded. Returns the state it was in.
WITH target AS (
    SELECT id, state FROM __schema__.jobs
    WHERE id = %(id)s AND state IN ('scheduled', 'available', 'retryable', 'executing')
    FOR UPDATE
)
UPDATE __schema__.jobs AS j
SET state = (CASE WHEN target.state = 'executing' THEN j.state ELSE 'paused' END)
FROM target
WHERE j.id = target.id
RETURNING j.id, target.state::text AS previous_state
