-- The whole data model, so that later features add logic and indexes, not rewrites.
-- Every table lives in the configured (validated) schema, spliced in at load time.

CREATE TYPE __schema__.job_state AS ENUM (
    'scheduled', 'available', 'executing', 'retryable',
    'completed', 'discarded', 'cancelled', 'paused', 'waiting'
);

-- The one table users, dashboards and outside tools may read: its name, its columns and the
-- state names are part of shigoto's public contract.
CREATE TABLE __schema__.jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state         __schema__.job_state NOT NULL DEFAULT 'available',
    queue         text NOT NULL DEFAULT 'default' CHECK (char_length(queue) BETWEEN 1 AND 128),
    worker        text NOT NULL CHECK (char_length(worker) BETWEEN 1 AND 255),
    args          jsonb NOT NULL DEFAULT '{}',
    meta          jsonb NOT NULL DEFAULT '{}',
    tags          text[] NOT NULL DEFAULT '{}',
    priority      smallint NOT NULL DEFAULT 0,          -- higher runs first
    attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),  -- executions started
    max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),  -- total runs allowed
    errors        jsonb NOT NULL DEFAULT '[]',          -- [{attempt, at, error, message, traceback}]
    result        jsonb,
    progress      real NOT NULL DEFAULT 0,
    inserted_at   timestamptz NOT NULL DEFAULT now(),
    scheduled_at  timestamptz NOT NULL DEFAULT now(),
    attempted_at  timestamptz,
    completed_at  timestamptz,
    cancelled_at  timestamptz,
    discarded_at  timestamptz,
    attempted_by  text,                                 -- id of the node that owns the run
    heartbeat_at  timestamptz,
    unique_key    text,                                 -- a hash, never the plaintext key
    partition_key text,
    batch_id      bigint,
    depends_on    bigint[] NOT NULL DEFAULT '{}',
    parent_id     bigint,                               -- workflow / fan-out parent
    origin        text
) WITH (
    -- Jobs are updated several times each: leave room for HOT updates and vacuum often.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- The claim: highest priority first, then oldest, among available jobs of a queue.
CREATE INDEX jobs_claim_idx ON __schema__.jobs (queue, priority DESC, scheduled_at, id)
    WHERE state = 'available';
-- Staging scheduled and retryable jobs whose time has come.
CREATE INDEX jobs_due_idx ON __schema__.jobs (scheduled_at, id)
    WHERE state IN ('scheduled', 'retryable');
-- status(): counts by queue and state.
CREATE INDEX jobs_queue_state_idx ON __schema__.jobs (queue, state);
CREATE INDEX jobs_worker_idx ON __schema__.jobs (worker, id);
CREATE INDEX jobs_tags_idx ON __schema__.jobs USING gin (tags);
CREATE INDEX jobs_unique_key_idx ON __schema__.jobs (unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_batch_idx ON __schema__.jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_parent_idx ON __schema__.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_depends_on_idx ON __schema__.jobs USING gin (depends_on)
    WHERE depends_on <> '{}';
CREATE INDEX jobs_owner_idx ON __schema__.jobs (attempted_by) WHERE state = 'executing';

-- One NOTIFY per inserting statement and queue, not per row: bulk inserts do not storm.
CREATE FUNCTION __schema__.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('__schema__.jobs_inserted', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_inserted_notify
    AFTER INSERT ON __schema__.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION __schema__.notify_jobs_inserted();

-- Finished jobs moved out of the hot table; same columns plus when they were archived.
CREATE TABLE __schema__.jobs_archive (
    LIKE __schema__.jobs INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
CREATE INDEX jobs_archive_archived_at_idx ON __schema__.jobs_archive (archived_at);
CREATE INDEX jobs_archive_worker_idx ON __schema__.jobs_archive (worker, id);

-- Nodes (worker processes) and their heartbeats: rescue is decided by node liveness.
CREATE TABLE __schema__.nodes (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    queues        jsonb NOT NULL DEFAULT '{}',
    meta          jsonb NOT NULL DEFAULT '{}',
    paused        boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Leadership by lease row (works behind PgBouncer transaction pooling).
CREATE TABLE __schema__.leaders (
    name        text PRIMARY KEY,
    node_id     text NOT NULL,
    elected_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Queue state shared by all nodes: pause and limits.
CREATE TABLE __schema__.queues (
    name               text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 128),
    paused             boolean NOT NULL DEFAULT false,
    paused_at          timestamptz,
    global_limit       integer CHECK (global_limit > 0),
    meta               jsonb NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Cron entries and recurring schedules, with the last firing for catch-up.
CREATE TABLE __schema__.schedules (
    name            text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 255),
    kind            text NOT NULL,                 -- cron, every, daily, weekly
    expression      text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    worker          text NOT NULL,
    args            jsonb NOT NULL DEFAULT '{}',
    options         jsonb NOT NULL DEFAULT '{}',   -- job options for each firing
    catch_up        interval NOT NULL DEFAULT '60 minutes',
    paused          boolean NOT NULL DEFAULT false,
    last_fired_at   timestamptz,
    next_fire_at    timestamptz,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per (schedule, moment): a moment fires once, whichever node gets there first.
CREATE TABLE __schema__.schedule_firings (
    name      text NOT NULL,
    fire_at   timestamptz NOT NULL,
    job_id    bigint,
    fired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, fire_at)
);

-- Batches and bundles: a group of jobs with a completion callback.
CREATE TABLE __schema__.batches (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state            text NOT NULL DEFAULT 'active',
    callback_worker  text,
    callback_args    jsonb NOT NULL DEFAULT '{}',
    total_jobs       integer NOT NULL DEFAULT 0,
    completed_jobs   integer NOT NULL DEFAULT 0,
    discarded_jobs   integer NOT NULL DEFAULT 0,
    cancelled_jobs   integer NOT NULL DEFAULT 0,
    meta             jsonb NOT NULL DEFAULT '{}',
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- Durable workflow steps: a step's result is stored once and replayed on retry.
CREATE TABLE __schema__.checkpoints (
    job_id      bigint NOT NULL,
    name        text NOT NULL,
    args_hash   text NOT NULL,
    result      jsonb,
    error       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- Fan-out groups of sub-jobs whose parent waits for them.
CREATE TABLE __schema__.fan_outs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id        bigint NOT NULL,
    step             text NOT NULL,
    strategy         text NOT NULL DEFAULT 'fail_fast',
    threshold        double precision NOT NULL DEFAULT 1,
    total            integer NOT NULL,
    state            text NOT NULL DEFAULT 'pending',
    timeout_at       timestamptz,
    cancel_on_fail   boolean NOT NULL DEFAULT false,
    inserted_at      timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (parent_id, step)
);
