-- Close the batches whose every job is finished (completed, discarded or cancelled) and
-- insert their callbacks: `on_complete` always, `on_discard` too when any
-- job was discarded, each with the batch's summary as its args. Run in a statement of its
-- own, so it sees committed states; a batch row is taken with SKIP LOCKED and closed only
-- while 'active', so however many nodes run this at once, a batch is closed once and its
-- callbacks inserted once.
WITH ready AS (
    SELECT b.id FROM __schema__.batches AS b
    WHERE b.state = 'active'
      AND NOT EXISTS (
          SELECT 1 FROM __schema__.jobs AS j
          WHERE j.batch_id = b.id AND j.state NOT IN ('completed', 'discarded', 'cancelled'))
    ORDER BY b.id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
), counts AS (
    SELECT r.id,
           count(j.id) FILTER (WHERE j.state = 'completed') AS completed,
           count(j.id) FILTER (WHERE j.state = 'discarded') AS discarded,
           count(j.id) FILTER (WHERE j.state = 'cancelled') AS cancelled
    FROM ready AS r
    LEFT JOIN __schema__.jobs AS j ON j.batch_id = r.id
    GROUP BY r.id
), closed AS (
    UPDATE __schema__.batches AS b
    SET state = 'finished', finished_at = now(),
        completed_jobs = c.completed, discarded_jobs = c.discarded, cancelled_jobs = c.cancelled
    FROM counts AS c
    WHERE b.id = c.id AND b.state = 'active'
    RETURNING b.*
), callbacks AS (
    SELECT closed.id AS batch_id, callback.spec,
           jsonb_build_object('batch', jsonb_build_object(
               'id', closed.id, 'total', closed.total_jobs,
               'completed', closed.completed_jobs, 'discarded', closed.discarded_jobs,
               'cancelled', closed.cancelled_jobs, 'meta', closed.meta)) AS args
    FROM closed
    CROSS JOIN LATERAL (
        VALUES (closed.on_complete), (CASE WHEN closed.discarded_jobs > 0
                                            THEN closed.on_discard END)
    ) AS callback(spec)
    WHERE callback.spec IS NOT NULL
), inserted AS (
    INSERT INTO __schema__.jobs (queue, worker, args, tags, priority, max_attempts, origin)
    SELECT spec->>'queue', spec->>'worker', args,
           ARRAY(SELECT jsonb_array_elements_text(spec->'tags')),
           (spec->>'priority')::smallint, (spec->>'max_attempts')::integer,
           'batch:' || batch_id
    FROM callbacks
    RETURNING id, origin
)
SELECT c.*, coalesce((SELECT array_agg(i.id) FROM inserted AS i
                      WHERE i.origin = 'batch:' || c.id), '{}') AS callback_ids
FROM closed AS c
