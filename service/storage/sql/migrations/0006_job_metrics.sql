-- Prometheus counters of finished jobs (SPEC 16), kept by a trigger in the transaction that
-- gives a job its final status: jobs of every worker machine count exactly once, a restart
-- loses nothing, and GET /metrics reads a few rows. One row per product and final status.
CREATE TABLE import_job_metrics (
    product_type   text NOT NULL,
    status         text NOT NULL,
    jobs           bigint NOT NULL DEFAULT 0,
    -- rows of the jobs that ended with this status (an undo counts the job, not rows)
    rows_valid     bigint NOT NULL DEFAULT 0,
    rows_invalid   bigint NOT NULL DEFAULT 0,
    rows_inserted  bigint NOT NULL DEFAULT 0,
    rows_updated   bigint NOT NULL DEFAULT 0,
    rows_unchanged bigint NOT NULL DEFAULT 0,
    rows_duplicate bigint NOT NULL DEFAULT 0,
    rows_deleted   bigint NOT NULL DEFAULT 0,
    -- seconds from enqueue to the end, per bucket (not cumulative; upper bounds in
    -- service.metrics.DURATION_BUCKETS, the last one +Inf), and their sum
    duration_counts bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[13]),
    duration_sum   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (product_type, status)
);

CREATE FUNCTION import_count_job_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ended boolean := OLD.status IN ('queued', 'running');
    seconds double precision := extract(epoch FROM coalesce(NEW.finished_at, now()) - NEW.created_at);
    bucket integer := 1 + (SELECT count(*) FROM unnest(ARRAY[0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]::float8[]) AS le WHERE le < seconds);
BEGIN
    INSERT INTO import_job_metrics AS m (product_type, status) VALUES (NEW.product_type, NEW.status)
    ON CONFLICT (product_type, status) DO NOTHING;
    UPDATE import_job_metrics SET
        jobs = jobs + 1,
        rows_valid = rows_valid + CASE WHEN ended THEN NEW.rows_valid ELSE 0 END,
        rows_invalid = rows_invalid + CASE WHEN ended THEN NEW.rows_invalid ELSE 0 END,
        rows_inserted = rows_inserted + CASE WHEN ended THEN NEW.rows_inserted ELSE 0 END,
        rows_updated = rows_updated + CASE WHEN ended THEN NEW.rows_updated ELSE 0 END,
        rows_unchanged = rows_unchanged + CASE WHEN ended THEN NEW.rows_unchanged ELSE 0 END,
        rows_duplicate = rows_duplicate + CASE WHEN ended THEN NEW.rows_duplicate ELSE 0 END,
        rows_deleted = rows_deleted + CASE WHEN ended THEN NEW.rows_deleted ELSE 0 END,
        duration_counts[bucket] = duration_counts[bucket] + CASE WHEN ended THEN 1 ELSE 0 END,
        duration_sum = duration_sum + CASE WHEN ended THEN seconds ELSE 0 END
    WHERE product_type = NEW.product_type AND status = NEW.status;
    RETURN NULL;
END $$;

CREATE TRIGGER import_count_job_end AFTER UPDATE OF status ON import_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'undone'))
    EXECUTE FUNCTION import_count_job_end();
