-- Of the runs (job id, attempt) this node has going, those it no longer owns: the job was
-- cancelled, rescued by another node (maybe claimed again since), or deleted. The node
-- stops them; their outcomes could not be written anyway.
SELECT running.id, running.attempt
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS running(id, attempt)
LEFT JOIN __schema__.jobs AS j ON j.id = running.id
WHERE j.id IS NULL
   OR NOT (j.state = 'executing' AND j.attempted_by = %(node)s AND j.attempt = running.attempt)
