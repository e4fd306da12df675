-- Set on a job once another job depends on it: when it finishes, its node resolves
-- the waiting jobs at once. With a job's batch_id, this is all the settle statement
-- needs to know, without looking anywhere else on the hot path.
ALTER TABLE __schema__.jobs ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
ALTER TABLE __schema__.jobs_archive ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
