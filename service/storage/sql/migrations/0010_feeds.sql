-- Feeds (SPEC 20): a prefix of a customer's area whose new files are imported once each.
-- Every statement may run again.
CREATE TABLE IF NOT EXISTS import_feeds (
    id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    product_type text NOT NULL,
    prefix_uri text NOT NULL,
    pattern text NOT NULL DEFAULT '*',
    options jsonb NOT NULL DEFAULT '{}',
    -- {"every_seconds": N} or {"cron": "..."}
    schedule jsonb NOT NULL,
    -- "keep", "delete" or {"move_to": prefix_uri}
    after_success jsonb NOT NULL DEFAULT '"keep"',
    expect_every_hours double precision,
    paused boolean NOT NULL DEFAULT false,
    -- The leader of a run holds this row (SELECT ... FOR UPDATE SKIP LOCKED) until the run commits.
    next_run_at timestamptz NOT NULL DEFAULT now(),
    last_run_at timestamptz,
    last_run_error text,
    last_run_found integer,
    last_run_enqueued integer,
    -- When a run last found a new file (the late alarm counts from it, or from created_at).
    last_new_at timestamptz,
    late boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS import_feeds_due ON import_feeds (next_run_at) WHERE NOT paused;
CREATE INDEX IF NOT EXISTS import_feeds_customer ON import_feeds (customer_id, created_at);

-- The ledger: one row per version of a file a feed has seen, and the one job that imports it.
-- The primary key is what makes "exactly once": a version is enqueued only by the run that
-- inserts its row (and the job's idempotency key is the version's id, should that run die
-- between the two).
CREATE TABLE IF NOT EXISTS import_feed_files (
    feed_id uuid NOT NULL REFERENCES import_feeds (id) ON DELETE CASCADE,
    -- sha256 of key and version, hex, 32 characters: the file's id in URLs (/files/<version>)
    version_id text NOT NULL,
    key text NOT NULL,  -- its URI
    version text NOT NULL,  -- size:mtime_ns of a file, the ETag of an S3 object or Azure blob, a GCS generation
    size bigint NOT NULL,
    job_id uuid,
    error text,  -- why it has no job: refused at enqueue (too big, not a regular file...)
    attempts integer NOT NULL DEFAULT 1,
    seen_at timestamptz NOT NULL DEFAULT now(),
    -- after_success done (the file deleted or moved), or not to be done (keep)
    settled_at timestamptz,
    PRIMARY KEY (feed_id, version_id)
);
CREATE INDEX IF NOT EXISTS import_feed_files_job ON import_feed_files (job_id);
CREATE INDEX IF NOT EXISTS import_feed_files_unsettled ON import_feed_files (feed_id) WHERE settled_at IS NULL;
