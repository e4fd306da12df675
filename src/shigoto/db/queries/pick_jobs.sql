-- The jobs a claim takes (inside settle_and_claim.sql): the highest priority first, then
-- the longest due, then the oldest. SKIP LOCKED lets every node claim at once without
-- waiting on each other. Nothing is picked while the queue is paused, or unless this
-- node's own heartbeat is fresh (by the database's clock), so that no other node can be
-- about to declare it dead and rescue what it claims.
SELECT id FROM __schema__.jobs
WHERE queue = %(queue)s AND state = 'available'
  AND EXISTS (
      SELECT 1 FROM __schema__.nodes
      WHERE id = %(node)s AND heartbeat_at > now() - make_interval(secs => %(fresh_for)s)
  )
  AND NOT EXISTS (SELECT 1 FROM __schema__.queues WHERE name = %(queue)s AND paused)
ORDER BY priority DESC, scheduled_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
