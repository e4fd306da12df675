-- Make due scheduled and retryable jobs available, a bounded batch at a time,
-- and wake each queue that received some. With `queue` set, only that queue; with `all`,
-- whatever their time (drain_queue's with_scheduled). (`id = ANY(ARRAY(...))`: see
-- settle_and_claim.sql.)
WITH staged AS (
    UPDATE __schema__.jobs AS j SET state = 'available'
    WHERE j.id = ANY(ARRAY(
        SELECT id FROM __schema__.jobs
        WHERE state IN ('scheduled', 'retryable')
          AND (%(all)s OR scheduled_at <= now())
          AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
        ORDER BY scheduled_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING j.queue
)
SELECT queue, count(*) AS staged, pg_notify('__schema__.jobs_inserted', queue)::text AS notified
FROM staged
GROUP BY queue
