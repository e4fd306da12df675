-- One batch of finished jobs that finished at least older_than ago; called until it deletes
-- fewer than the limit, so no single transaction grows large.
WITH doomed AS (
    SELECT id FROM __schema__.jobs
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND COALESCE(completed_at, discarded_at, cancelled_at) <= now() - %(older_than)s::interval
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM __schema__.jobs AS j USING doomed WHERE j.id = doomed.id
