-- A stopping node's last look, once its outcomes are written: the jobs still executing
-- under its name that it does not run (claimed, never started: the answer to a claim lost
-- on its way, say) go back to the queue with their attempt refunded, so that none waits
-- for a rescue. `running` lists the runs it still has (a sync job's thread that would not
-- end), which stay as they are. Returns the ids given back.
UPDATE __schema__.jobs
SET state = 'available', attempt = attempt - 1
WHERE state = 'executing'
  AND attempted_by = %(node)s
  AND NOT (id = ANY(%(running)s::bigint[]))
RETURNING id
