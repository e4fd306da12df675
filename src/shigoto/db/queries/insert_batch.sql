-- A batch's row, with its total, before its jobs (which name it) in the same transaction.
INSERT INTO __schema__.batches (total_jobs, meta, on_complete, on_discard)
VALUES (%(total)s, %(meta)s, %(on_complete)s, %(on_discard)s)
RETURNING id
