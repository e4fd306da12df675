-- One batch of finished jobs that finished at least older_than ago; called until it deletes
-- fewer than the limit, so no single transaction grows large. (`id = ANY(ARRAY(...))`: see
-- settle_and_claim.sql.)
DELETE FROM __schema__.jobs
WHERE id = ANY(ARRAY(
    SELECT id FROM __schema__.jobs
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND COALESCE(completed_at, discarded_at, cancelled_at) <= now() - %(older_than)s::interval
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
