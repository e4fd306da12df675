-- The jobs a fair claim takes (inside settle_and_claim.sql): round-robin across the
-- queue's partitions (partition_key; jobs without one form one more partition). Every
-- partition's best job ranks before any partition's second best, so a tenant with 100,000
-- jobs waiting cannot starve one with 10. The partitions are found by walking the partial
-- index (a skip scan: one probe per partition, not one row per job), and each partition
-- contributes at most `limit` candidates. The same gates as pick_jobs.sql.
--
-- Among the partitions' jobs of one rank, the claim starts after the partition the
-- producer's previous claim ended with (`after`: its key, '' for the jobs without one,
-- NULL on a first claim) and goes round: the partitions in key order, the jobs without one
-- first. So partitions take turns claim by claim, even when each claim takes one job.
-- Keys compare as "C" (code points), the order the producer sorts the claimed jobs in.
WITH RECURSIVE partitions AS (
    (SELECT partition_key AS key FROM __schema__.jobs
     WHERE queue = %(queue)s AND state = 'available' AND partition_key IS NOT NULL
     ORDER BY partition_key LIMIT 1)
    UNION ALL
    SELECT (SELECT j.partition_key FROM __schema__.jobs AS j
            WHERE j.queue = %(queue)s AND j.state = 'available'
              AND j.partition_key > partitions.key
            ORDER BY j.partition_key LIMIT 1)
    FROM partitions WHERE partitions.key IS NOT NULL
), candidates AS (
    SELECT best.* FROM partitions
    CROSS JOIN LATERAL (
        SELECT id, priority, scheduled_at, partitions.key,
               row_number() OVER (ORDER BY priority DESC, scheduled_at, id) AS rank
        FROM (SELECT id, priority, scheduled_at FROM __schema__.jobs
              WHERE queue = %(queue)s AND state = 'available' AND partition_key = partitions.key
              ORDER BY priority DESC, scheduled_at, id
              LIMIT %(limit)s) AS top
    ) AS best
    WHERE partitions.key IS NOT NULL
    UNION ALL
    SELECT id, priority, scheduled_at, NULL::text AS key,
           row_number() OVER (ORDER BY priority DESC, scheduled_at, id) AS rank
    FROM (SELECT id, priority, scheduled_at FROM __schema__.jobs
          WHERE queue = %(queue)s AND state = 'available' AND partition_key IS NULL
          ORDER BY priority DESC, scheduled_at, id
          LIMIT %(limit)s) AS unkeyed
)
SELECT j.id FROM __schema__.jobs AS j
JOIN candidates AS c ON c.id = j.id
WHERE j.state = 'available'
  AND EXISTS (
      SELECT 1 FROM __schema__.nodes
      WHERE id = %(node)s AND heartbeat_at > now() - make_interval(secs => %(fresh_for)s)
  )
  AND NOT EXISTS (SELECT 1 FROM __schema__.queues WHERE name = %(queue)s AND paused)
ORDER BY c.rank,
         %(after)s::text IS NOT NULL
             AND (c.key IS NULL OR c.key COLLATE "C" <= %(after)s::text COLLATE "C"),
         c.key COLLATE "C" NULLS FIRST,
         c.priority DESC, c.scheduled_at, c.id
LIMIT %(limit)s
FOR UPDATE OF j SKIP LOCKED
