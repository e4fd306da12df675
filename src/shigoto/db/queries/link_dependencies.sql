-- Add to jobs just inserted by insert_jobs.sql their dependencies on jobs of the same call.
UPDATE __schema__.jobs AS j
SET depends_on = j.depends_on || x.more
FROM (
    SELECT id, array_agg(dependency) AS more
    FROM unnest(%(ids)s::bigint[], %(dependencies)s::bigint[]) AS link(id, dependency)
    GROUP BY id
) AS x
WHERE j.id = x.id
