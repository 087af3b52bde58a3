-- App DB: jobs, their logs, the chunk plan of each job, and the dramatiq-pg queue.

CREATE TABLE import_jobs (
    id              uuid PRIMARY KEY,
    customer_id     text NOT NULL,
    product_type    text NOT NULL,
    blob_uri        text NOT NULL,
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    rows_total      bigint NOT NULL DEFAULT 0,
    rows_valid      bigint NOT NULL DEFAULT 0,
    rows_invalid    bigint NOT NULL DEFAULT 0,
    rows_inserted   bigint NOT NULL DEFAULT 0,
    error           text,
    idempotency_key text,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Pipeline state, internal: the file's detected layout, the chunk plan's progress,
    -- how many row errors were logged, since when the customer DB has been unreachable.
    plan            jsonb,
    chunks_total    integer,
    chunks_done     integer NOT NULL DEFAULT 0,
    logged_errors   integer NOT NULL DEFAULT 0,
    unreachable_since timestamptz,
    CONSTRAINT import_jobs_idempotency UNIQUE (customer_id, idempotency_key)
);

CREATE INDEX import_jobs_customer_created ON import_jobs (customer_id, created_at DESC);
CREATE INDEX import_jobs_unfinished ON import_jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE import_logs (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    level       text NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    row_number  integer,
    field       text,
    message     text NOT NULL
);

CREATE INDEX import_logs_job ON import_logs (job_id, id);

-- One row per chunk of a job's file: where it starts, how many records, whether its
-- valid rows are staged. `done` flips once, which is what makes counts exact.
CREATE TABLE import_chunks (
    job_id       uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    chunk_no     integer NOT NULL,
    first_row    integer NOT NULL,
    first_line   integer NOT NULL,
    start_pos    bigint NOT NULL,
    row_count    integer NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    done         boolean NOT NULL DEFAULT false,
    rows_valid   integer,
    rows_invalid integer,
    PRIMARY KEY (job_id, chunk_no)
);

-- dramatiq-pg's own schema (its schema.sql), created here so no CLI of theirs is needed.
CREATE SCHEMA IF NOT EXISTS dramatiq;

CREATE TYPE dramatiq.state AS ENUM ('queued', 'consumed', 'rejected', 'done');

CREATE TABLE dramatiq.queue (
    message_id uuid PRIMARY KEY,
    queue_name text NOT NULL DEFAULT 'default',
    "state"    dramatiq.state,
    mtime      timestamp with time zone DEFAULT (now() AT TIME ZONE 'UTC'),
    message    jsonb,
    "result"   jsonb,
    result_ttl timestamp with time zone
);

CREATE INDEX ON dramatiq.queue ("state", mtime);
