-- Delete one batch of archived jobs archived more than `older_than` seconds ago.
DELETE FROM __schema__.jobs_archive
WHERE id = ANY(ARRAY(
    SELECT id FROM __schema__.jobs_archive
    WHERE archived_at < now() - make_interval(secs => %(older_than)s)
    LIMIT %(limit)s
))
