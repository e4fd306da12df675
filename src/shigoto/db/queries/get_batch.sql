-- A batch with its counts: the final ones once finished, live ones while it runs.
SELECT b.id, b.state, b.total_jobs, b.meta, b.inserted_at, b.finished_at,
       (CASE WHEN b.state = 'finished' THEN b.completed_jobs ELSE live.completed END)
           AS completed_jobs,
       (CASE WHEN b.state = 'finished' THEN b.discarded_jobs ELSE live.discarded END)
           AS discarded_jobs,
       (CASE WHEN b.state = 'finished' THEN b.cancelled_jobs ELSE live.cancelled END)
           AS cancelled_jobs
FROM __schema__.batches AS b
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.state = 'completed') AS completed,
           count(*) FILTER (WHERE j.state = 'discarded') AS discarded,
           count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
    FROM __schema__.jobs AS j
    WHERE j.batch_id = b.id AND b.state <> 'finished'
) AS live
WHERE b.id = %(id)s
