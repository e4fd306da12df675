-- Of the jobs this node is running, those it no longer owns: cancelled, rescued by
-- another node, or deleted. The node stops them (their outcome could not be written).
SELECT running.id
FROM unnest(%(ids)s::bigint[]) AS running(id)
LEFT JOIN __schema__.jobs AS j ON j.id = running.id
WHERE j.id IS NULL
   OR NOT (j.state = 'executing' AND j.attempted_by = %(node)s)
