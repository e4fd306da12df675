-- Scheduling and flow control.
-- A schedule's catch-up policy after downtime: every missed moment within `catch_up`
-- ('window'), only the latest missed moment ('latest'), or none ('none').
ALTER TABLE __schema__.schedules
    ADD COLUMN catch_up_policy text NOT NULL DEFAULT 'window'
        CHECK (catch_up_policy IN ('window', 'latest', 'none'));

-- Firings are kept a while as the guard against firing a moment twice, then pruned.
CREATE INDEX schedule_firings_fire_at_idx ON __schema__.schedule_firings (fire_at);

-- Fair claiming walks a queue's partitions: one entry per available partitioned job only.
CREATE INDEX jobs_partition_claim_idx
    ON __schema__.jobs (queue, partition_key, priority DESC, scheduled_at, id)
    WHERE state = 'available' AND partition_key IS NOT NULL;
