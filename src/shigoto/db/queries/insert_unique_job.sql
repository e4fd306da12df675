-- Insert a unique job, under the key's lock (lock_unique_key.sql): when a
-- job with the same key is in one of `states` (and inserted within `period` seconds, if
-- given), insert nothing and return that job as a conflict, after copying the `replace`
-- fields onto it and pushing its start to now + `debounce` (while it still waits).
WITH existing AS (
    SELECT id FROM __schema__.jobs
    WHERE unique_key = %(unique_key)s
      AND state::text = ANY(%(states)s::text[])
      AND (%(period)s::float8 IS NULL
           OR inserted_at >= now() - make_interval(secs => %(period)s::float8))
    ORDER BY id DESC
    LIMIT 1
), decided AS (
    SELECT j.id,
           (CASE WHEN %(debounce)s::float8 IS NOT NULL
                     THEN now() + make_interval(secs => %(debounce)s::float8)
                 WHEN 'scheduled_at' = ANY(%(replace)s::text[])
                     THEN COALESCE(%(scheduled_at)s::timestamptz, now())
                 ELSE j.scheduled_at END) AS new_at
    FROM __schema__.jobs AS j JOIN existing USING (id)
), replaced AS (
    UPDATE __schema__.jobs AS j
    SET args = (CASE WHEN 'args' = ANY(%(replace)s::text[]) THEN COALESCE(%(args)s::jsonb, '{}') ELSE j.args END),
        meta = (CASE WHEN 'meta' = ANY(%(replace)s::text[]) THEN COALESCE(%(meta)s::jsonb, '{}') ELSE j.meta END),
        tags = (CASE WHEN 'tags' = ANY(%(replace)s::text[])
                     THEN COALESCE(%(tags)s::text[], '{}') ELSE j.tags END),
        priority = (CASE WHEN 'priority' = ANY(%(replace)s::text[])
                         THEN %(priority)s ELSE j.priority END),
        max_attempts = (CASE WHEN 'max_attempts' = ANY(%(replace)s::text[])
                             THEN %(max_attempts)s ELSE j.max_attempts END),
        scheduled_at = d.new_at,
        state = (CASE WHEN j.state IN ('scheduled', 'available', 'retryable')
                           AND d.new_at IS DISTINCT FROM j.scheduled_at
                      THEN (CASE WHEN d.new_at > now() THEN 'scheduled' ELSE 'available' END)
                           ::__schema__.job_state
                      ELSE j.state END)
    FROM decided AS d
    WHERE j.id = d.id
      AND j.state NOT IN ('executing', 'completed', 'discarded', 'cancelled')
      AND (cardinality(%(replace)s::text[]) > 0 OR %(debounce)s::float8 IS NOT NULL)
    RETURNING j.*
), fresh AS (
    INSERT INTO __schema__.jobs
        (state, queue, worker, args, meta, tags, priority, max_attempts,
         scheduled_at, partition_key, origin, unique_key, depends_on, on_dependency_failure)
    SELECT
        (CASE WHEN cardinality(%(depends_on)s::bigint[]) > 0
               AND EXISTS (SELECT 1 FROM __schema__.jobs AS d
                           WHERE d.id = ANY(%(depends_on)s::bigint[])
                             AND d.state <> 'completed')
                  THEN 'waiting'
              WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled'
              ELSE 'available' END)
            ::__schema__.job_state,
        %(queue)s, %(worker)s, COALESCE(%(args)s::jsonb, '{}'), COALESCE(%(meta)s::jsonb, '{}'),
        COALESCE(%(tags)s::text[], '{}'), %(priority)s,
        %(max_attempts)s, COALESCE(%(scheduled_at)s::timestamptz, now()), %(partition_key)s,
        %(origin)s, %(unique_key)s, %(depends_on)s::bigint[], %(on_dependency_failure)s
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    RETURNING *
)
SELECT true AS conflict, r.* FROM replaced AS r
UNION ALL
SELECT true, j.* FROM __schema__.jobs AS j JOIN existing USING (id)
WHERE NOT EXISTS (SELECT 1 FROM replaced)
UNION ALL
SELECT false, f.* FROM fresh AS f
