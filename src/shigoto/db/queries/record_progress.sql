-- Progress of running jobs, a batch at a time, only while this node still runs them.
UPDATE __schema__.jobs AS j
SET progress = p.progress
FROM jsonb_to_recordset(%(updates)s::jsonb) AS p(id bigint, attempt integer, progress real)
WHERE j.id = p.id AND j.state = 'executing'
  AND j.attempted_by = %(node)s AND j.attempt = p.attempt
