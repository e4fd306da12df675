-- Batches: what to insert when a batch is over, and a cheap way to find the
-- batches still running.
ALTER TABLE __schema__.batches
    ADD COLUMN on_complete jsonb,   -- {"worker", "queue", "priority", "max_attempts", "tags"}
    ADD COLUMN on_discard jsonb;    -- the same, inserted too when any job was discarded
CREATE INDEX batches_active_idx ON __schema__.batches (id) WHERE state = 'active';
