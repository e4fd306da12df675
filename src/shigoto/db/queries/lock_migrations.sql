-- Serialises migrations of one schema across processes, for this transaction only
-- (a transaction-level lock also works behind PgBouncer).
SELECT pg_advisory_xact_lock(hashtext('shigoto.migrate'), hashtext('__schema__'))
