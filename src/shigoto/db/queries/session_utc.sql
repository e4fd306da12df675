-- Run once on each connection of shigoto's pools: timestamps come back in UTC, which our
-- code wants, and which psycopg loads twice as fast as those of a named zone (0.34 against
-- 0.70 us per timestamptz; 'Etc/UTC' counts as named), and a claim reads several per job.
SET TIME ZONE 'UTC'
