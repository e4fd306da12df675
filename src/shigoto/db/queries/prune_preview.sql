-- What pruning would do now: finished jobs to archive, archived jobs to delete.
SELECT
    (SELECT count(*) FROM __schema__.jobs
     WHERE state IN ('completed', 'discarded', 'cancelled')
       AND COALESCE(completed_at, discarded_at, cancelled_at)
           < now() - make_interval(secs => %(prune_after)s)) AS to_archive,
    (SELECT count(*) FROM __schema__.jobs_archive
     WHERE archived_at < now() - make_interval(secs => %(retention)s)) AS to_delete
