-- Claim up to `limit` available jobs of one queue for this node: highest priority first,
-- then the longest due, then the oldest. SKIP LOCKED lets every node claim at once without
-- waiting on each other; the claim is the attempt (decision D1) and sets the owner (D3).
-- Only a node whose own heartbeat is fresh (by the database's clock) may claim, so that no
-- other node can be about to declare it dead and rescue what it claims.
-- `id = ANY(ARRAY(...))` keeps the update on the primary key whatever the planner guesses
-- for a parameterised LIMIT (a join here degrades to a scan of the table under a generic
-- plan, which prepared statements get).
UPDATE __schema__.jobs AS j
SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(),
    attempted_by = %(node)s, heartbeat_at = now()
WHERE j.id = ANY(ARRAY(
    SELECT id FROM __schema__.jobs
    WHERE queue = %(queue)s AND state = 'available'
      AND EXISTS (
          SELECT 1 FROM __schema__.nodes
          WHERE id = %(node)s AND heartbeat_at > now() - make_interval(secs => %(fresh_for)s)
      )
    ORDER BY priority DESC, scheduled_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING j.*
