-- Remove the dead row versions of `jobs`, and their index entries: every claim walks the
-- entries of jobs claimed since the last vacuum at the front of the claim index, so they
-- must go (INDEX_CLEANUP ON: the default may skip the indexes when few pages are dirty).
-- SKIP_LOCKED: if autovacuum is on it already, leave it to autovacuum.
VACUUM (INDEX_CLEANUP ON, SKIP_LOCKED) __schema__.jobs
