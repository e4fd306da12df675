-- Serialise inserts of one unique key until this transaction ends (also behind PgBouncer).
-- Taken in its own statement, before insert_unique_job.sql, so that statement's snapshot
-- sees whatever the previous holder committed.
SELECT pg_advisory_xact_lock(hashtext('__schema__.unique'), hashtext(%(unique_key)s))
