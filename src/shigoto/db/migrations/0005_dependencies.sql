-- Dependencies: what a job does when one of its dependencies is discarded
-- or cancelled, and a cheap way to find the jobs waiting on others.
ALTER TABLE __schema__.jobs ADD COLUMN on_dependency_failure text NOT NULL DEFAULT 'cancel'
    CHECK (on_dependency_failure IN ('cancel', 'run'));
ALTER TABLE __schema__.jobs_archive ADD COLUMN on_dependency_failure text NOT NULL
    DEFAULT 'cancel';
CREATE INDEX jobs_waiting_idx ON __schema__.jobs (id) WHERE state = 'waiting';
