-- Pause or resume a queue for every node; persisted, so it survives restarts. Claims check
-- it (pick_jobs.sql), so a node that missed a signal still claims nothing; resuming wakes
-- the queue on every node.
INSERT INTO __schema__.queues AS q (name, paused, paused_at)
VALUES (%(queue)s, %(paused)s, (CASE WHEN %(paused)s THEN now() END))
ON CONFLICT (name) DO UPDATE
SET paused = EXCLUDED.paused, paused_at = EXCLUDED.paused_at, updated_at = now()
RETURNING name,
    (CASE WHEN NOT paused THEN pg_notify('__schema__.jobs_inserted', name) END)::text AS woken
