-- After a firing: the jobs it inserted, and the schedule's new last and next moments.
WITH linked AS (
    UPDATE __schema__.schedule_firings AS f SET job_id = x.job_id
    FROM unnest(%(moments)s::timestamptz[], %(job_ids)s::bigint[]) AS x(fire_at, job_id)
    WHERE f.name = %(name)s AND f.fire_at = x.fire_at
)
UPDATE __schema__.schedules
SET last_fired_at = GREATEST(COALESCE(last_fired_at, %(last)s), %(last)s),
    next_fire_at = %(next)s
WHERE name = %(name)s
