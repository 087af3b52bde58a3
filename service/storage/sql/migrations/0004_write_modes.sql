-- Write modes (upsert, replace, atomic append), cancel and undo (SPEC sections 12-13).
ALTER TABLE import_jobs DROP CONSTRAINT import_jobs_status_check;
ALTER TABLE import_jobs ADD CONSTRAINT import_jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'undone'));

ALTER TABLE import_jobs
    ADD COLUMN rows_updated   bigint NOT NULL DEFAULT 0,
    ADD COLUMN rows_unchanged bigint NOT NULL DEFAULT 0,
    ADD COLUMN rows_duplicate bigint NOT NULL DEFAULT 0,
    ADD COLUMN rows_deleted   bigint NOT NULL DEFAULT 0,
    ADD COLUMN undone_at      timestamptz,
    -- Internal: an atomic job waits here (no message) until every job of the same customer
    -- and product enqueued before it has ended; the last of those sends its publish.
    ADD COLUMN waiting        boolean NOT NULL DEFAULT false,
    -- Internal: set in the instant between the publish's last check and its commit in the
    -- customer DB; a cancel cannot take effect then (the job is about to succeed).
    ADD COLUMN publishing     boolean NOT NULL DEFAULT false,
    -- Internal: a big undo handed to a worker.
    ADD COLUMN undo_pending   boolean NOT NULL DEFAULT false;

CREATE INDEX import_jobs_publish_order ON import_jobs (customer_id, product_type, created_at)
    WHERE status IN ('queued', 'running');
