-- `app.wait_for(job_id)` marks the job it waits for; whatever finishes a marked job
-- (an outcome, a cancel, a rescue) sends its id on `jobs_finished`. Unmarked jobs, nearly
-- all of them, send nothing: a NOTIFY in every commit would serialise the commits.
ALTER TABLE __schema__.jobs ADD COLUMN awaited boolean NOT NULL DEFAULT false;
ALTER TABLE __schema__.jobs_archive ADD COLUMN awaited boolean NOT NULL DEFAULT false;
