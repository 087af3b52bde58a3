-- Named queries of the app DB, loaded once by service/jobs.py (the only module that runs them).
-- {job_columns} is every column a Job carries but `plan` (jobs.JOB_COLUMNS): a file's header
-- of up to max_columns names is loaded by the stages that read the file, never by a view.

-- name: insert_job
INSERT INTO import_jobs (id, customer_id, product_type, blob_uri, options, idempotency_key, request_hash)
VALUES (%(id)s, %(customer_id)s, %(product_type)s, %(blob_uri)s, %(options)s, %(idempotency_key)s, %(request_hash)s)
ON CONFLICT ON CONSTRAINT import_jobs_idempotency DO NOTHING
RETURNING id;

-- name: job_by_key
SELECT id, request_hash FROM import_jobs WHERE customer_id = %s AND idempotency_key = %s;

-- name: enqueue_message
-- The broker's own enqueue (dramatiq-pg ENQUEUE), run on our cursor so that the message
-- commits or rolls back with the job state that caused it.
WITH enqueued AS (
    INSERT INTO dramatiq.queue (queue_name, message_id, "state", message)
    VALUES (%(queue)s, %(message_id)s, 'queued', %(message)s)
    ON CONFLICT (message_id) DO UPDATE
        SET "state" = 'queued', message = EXCLUDED.message, queue_name = EXCLUDED.queue_name
    RETURNING queue_name, message
)
SELECT pg_notify('dramatiq.' || queue_name || '.enqueue',
                 CASE WHEN octet_length(message::text) >= 8000
                      THEN jsonb_build_object('message_id', %(message_id)s)::text
                      ELSE message::text END)
FROM enqueued;

-- name: job
SELECT {job_columns} FROM import_jobs WHERE id = %s;

-- name: job_plan
SELECT plan FROM import_jobs WHERE id = %s;

-- name: job_state_for_update
SELECT status, cancel_requested, publishing, logged_errors, options FROM import_jobs WHERE id = %s FOR UPDATE;

-- name: list_jobs
SELECT {job_columns} FROM import_jobs
WHERE (%(all_customers)s OR customer_id = ANY(%(customers)s))
  AND (%(customer_id)s::text IS NULL OR customer_id = %(customer_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY created_at DESC, id
LIMIT %(limit)s;

-- name: logs
SELECT at, level, row_number, field, message FROM import_logs WHERE job_id = %s ORDER BY id;

-- name: insert_log
INSERT INTO import_logs (job_id, level, row_number, field, message) VALUES %s;

-- name: save_plan
UPDATE import_jobs SET plan = %s, updated_at = now() WHERE id = %s AND status = 'running' AND NOT cancel_requested;

-- name: insert_chunk
INSERT INTO import_chunks (job_id, chunk_no, first_row, first_line, start_pos, row_count)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (job_id, chunk_no) DO NOTHING
RETURNING chunk_no;

-- name: customer_turns_lock
-- Serialises the sending of one customer's chunks (fair turns, SPEC 15): taken before any
-- row lock by every transaction that plans or completes a chunk of the customer.
SELECT pg_advisory_xact_lock(hashtext('import-service:chunks:' || %s));

-- name: customer_in_flight
-- Chunk messages of the customer's running jobs that are queued or running.
SELECT coalesce(sum(greatest(chunks_sent - chunks_done, 0)), 0)::integer AS n
FROM import_jobs WHERE customer_id = %s AND status = 'running' AND NOT cancel_requested;

-- name: send_next_chunk
-- The customer's next turn: the lowest unsent chunk of its running job with the fewest
-- chunks in flight (the earliest job on a tie), marked sent.
WITH job AS (
    SELECT j.id FROM import_jobs j
    WHERE j.customer_id = %(customer)s AND j.status = 'running' AND NOT j.cancel_requested
      AND EXISTS (SELECT 1 FROM import_chunks c WHERE c.job_id = j.id AND NOT c.sent)
    ORDER BY j.chunks_sent - j.chunks_done, j.created_at
    LIMIT 1
), chunk AS (
    SELECT c.job_id, c.chunk_no FROM import_chunks c JOIN job ON c.job_id = job.id
    WHERE NOT c.sent ORDER BY c.chunk_no LIMIT 1
), marked AS (
    UPDATE import_chunks c SET sent = true FROM chunk
    WHERE c.job_id = chunk.job_id AND c.chunk_no = chunk.chunk_no
    RETURNING c.job_id, c.chunk_no
)
UPDATE import_jobs j SET chunks_sent = j.chunks_sent + 1 FROM marked
WHERE j.id = marked.job_id
RETURNING marked.job_id::text AS job_id, marked.chunk_no;

-- name: customers_with_unsent_chunks
SELECT DISTINCT j.customer_id FROM import_jobs j
WHERE j.status = 'running' AND EXISTS (SELECT 1 FROM import_chunks c WHERE c.job_id = j.id AND NOT c.sent);

-- name: job_customer
SELECT customer_id, status FROM import_jobs WHERE id = %s;

-- name: finish_planning
UPDATE import_jobs SET chunks_total = %s, stage_running = NULL, updated_at = now()
WHERE id = %s AND status = 'running' AND NOT cancel_requested
RETURNING chunks_total, chunks_done;

-- name: begin_chunk
-- `running` still set means the previous attempt never ended: its worker died.
UPDATE import_chunks c
SET attempts = c.attempts + 1, crashes = c.crashes + (CASE WHEN c.running THEN 1 ELSE 0 END), running = true
FROM import_jobs j
WHERE c.job_id = %s AND c.chunk_no = %s AND NOT c.done AND j.id = c.job_id AND j.status = 'running'
  AND NOT j.cancel_requested
RETURNING c.first_row, c.first_line, c.start_pos, c.row_count, c.attempts, c.crashes, j.*;

-- name: end_chunk_attempt
UPDATE import_chunks SET running = false WHERE job_id = %s AND chunk_no = %s;

-- name: enter_stage
-- A job-level stage begins (the first one also starts the job): `stage_running` still set
-- to this stage means its previous attempt never ended, its worker died. The row comes back.
-- Every transaction that ends a stage clears `stage_running` (leave_stage, save_chunks with
-- a total, succeed, fail, start_waiting).
UPDATE import_jobs
SET status = 'running',
    started_at = coalesce(started_at, now()),
    stage_crashes = CASE WHEN stage_running = %(stage)s THEN stage_crashes + 1 ELSE 0 END,
    stage_running = %(stage)s, updated_at = now()
WHERE id = %(id)s AND (status = 'running' OR (%(start)s AND status = 'queued')) AND NOT cancel_requested
RETURNING *;

-- name: leave_stage
UPDATE import_jobs SET stage_running = NULL WHERE id = %s AND stage_running = %s;

-- name: complete_chunk
UPDATE import_chunks SET done = true, running = false, rows_valid = %s, rows_invalid = %s
WHERE job_id = %s AND chunk_no = %s AND NOT done
RETURNING chunk_no;

-- name: count_chunk
-- Runs in the same transaction as complete_chunk and only when it flipped `done`,
-- so each chunk is counted exactly once.
UPDATE import_jobs
SET rows_total = rows_total + %(valid)s + %(invalid)s,
    rows_valid = rows_valid + %(valid)s,
    rows_invalid = rows_invalid + %(invalid)s,
    chunks_done = chunks_done + 1,
    logged_errors = logged_errors + %(logged)s,
    unreachable_since = NULL,
    updated_at = now()
WHERE id = %(id)s AND status = 'running' AND NOT cancel_requested
RETURNING chunks_total, chunks_done;

-- name: fail_job
-- A job being cancelled that fails meanwhile (a stage's error, the sweep) ends cancelled:
-- the caller deleted its rows first, as a cancel does.
UPDATE import_jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
    error = CASE WHEN cancel_requested THEN NULL ELSE %s END,
    finished_at = now(), updated_at = now(), cleanup_pending = true,
    waiting = false, publishing = false, stage_running = NULL
WHERE id = %s AND status IN ('queued', 'running')
RETURNING customer_id, product_type, status;

-- name: mark_unreachable
UPDATE import_jobs SET unreachable_since = coalesce(unreachable_since, now()), updated_at = now()
WHERE id = %s
RETURNING extract(epoch FROM now() - unreachable_since);

-- name: delete_chunks
DELETE FROM import_chunks WHERE job_id = %s;

-- name: planned_rows
SELECT coalesce(sum(row_count), 0) AS planned, j.chunks_total IS NOT NULL AS complete
FROM import_jobs j LEFT JOIN import_chunks c ON c.job_id = j.id
WHERE j.id = %s
GROUP BY j.chunks_total;

-- name: orphaned_jobs
-- Unfinished jobs with no live message: every state change writes the next message in the
-- same transaction, so this only happens when a message was dead-lettered or deleted and
-- the job could not be failed at that moment.
SELECT {job_columns} FROM import_jobs j
WHERE j.status IN ('queued', 'running') AND NOT j.waiting
  AND j.updated_at < now() - make_interval(secs => %s)
  AND NOT EXISTS (
      SELECT 1 FROM dramatiq.queue q
      WHERE q.state IN ('queued', 'consumed') AND q.message -> 'args' ->> 0 = j.id::text)
  -- A job whose chunks wait for their turn is moved on by its customer's other chunks,
  -- unless none of them has a live message either.
  AND NOT (EXISTS (SELECT 1 FROM import_chunks c WHERE c.job_id = j.id AND NOT c.sent)
           AND EXISTS (SELECT 1 FROM dramatiq.queue q JOIN import_jobs o ON q.message -> 'args' ->> 0 = o.id::text
                       WHERE q.state IN ('queued', 'consumed') AND o.customer_id = j.customer_id
                         AND o.status = 'running'))
LIMIT 100;

-- name: cleanups_due
SELECT {job_columns} FROM import_jobs
WHERE status IN ('failed', 'cancelled') AND cleanup_pending AND finished_at < now() - make_interval(secs => %s)
LIMIT 100;

-- name: cleanup_done
UPDATE import_jobs SET cleanup_pending = false WHERE id = %s;

-- name: succeed_counts
UPDATE import_jobs
SET status = 'succeeded', rows_inserted = %(inserted)s, rows_updated = %(updated)s,
    rows_unchanged = %(unchanged)s, rows_duplicate = %(duplicate)s, rows_deleted = %(deleted)s,
    finished_at = now(), updated_at = now(), unreachable_since = NULL, publishing = false, stage_running = NULL
WHERE id = %(id)s AND status = 'running' AND NOT cancel_requested
RETURNING customer_id, product_type;

-- name: publish_order_lock
-- Serialises the turn-taking of one customer's product: a job starting to wait and an
-- earlier job ending (which wakes it) never miss each other.
SELECT pg_advisory_xact_lock(hashtext('import-service:turns:' || %s || '/' || %s));

-- name: earlier_unfinished
-- Jobs of the same customer and product, enqueued before this one, that may still write.
SELECT e.id FROM import_jobs e, import_jobs w
WHERE w.id = %s AND e.customer_id = w.customer_id AND e.product_type = w.product_type
  AND e.status IN ('queued', 'running') AND (e.created_at, e.id) < (w.created_at, w.id)
  AND NOT coalesce((e.options ->> 'dry_run')::boolean, false)
ORDER BY e.created_at, e.id
LIMIT 5;

-- name: start_waiting
UPDATE import_jobs SET waiting = true, stage_running = NULL, updated_at = now()
WHERE id = %s AND status = 'running' AND NOT cancel_requested RETURNING id;

-- name: wake_waiters
-- Waiting jobs of a customer's product none of whose earlier jobs may still write.
UPDATE import_jobs w SET waiting = false, updated_at = now()
WHERE w.customer_id = %s AND w.product_type = %s AND w.status = 'running' AND w.waiting
  AND NOT EXISTS (
      SELECT 1 FROM import_jobs e
      WHERE e.customer_id = w.customer_id AND e.product_type = w.product_type
        AND e.status IN ('queued', 'running') AND (e.created_at, e.id) < (w.created_at, w.id)
        AND NOT coalesce((e.options ->> 'dry_run')::boolean, false))
RETURNING w.id;

-- name: waiting_turns
SELECT DISTINCT customer_id, product_type FROM import_jobs
WHERE status = 'running' AND waiting AND updated_at < now() - make_interval(secs => %s);

-- name: start_publishing
-- The last step before a publish commits in the customer DB: from here on, cancel waits.
UPDATE import_jobs SET publishing = true, updated_at = now()
WHERE id = %s AND status = 'running' AND NOT cancel_requested RETURNING id;

-- name: cancel_job
-- A job none of whose rows can be in the product table (queued, atomic, dry run) is
-- cancelled at once; the staging table it may have goes later.
UPDATE import_jobs
SET status = 'cancelled', error = NULL, finished_at = now(), updated_at = now(), cleanup_pending = true,
    waiting = false
WHERE id = %s AND status IN ('queued', 'running') AND NOT publishing
RETURNING customer_id, product_type;

-- name: request_cancel
-- A running streaming job stops taking work, but reads `running` until its rows are gone.
UPDATE import_jobs SET cancel_requested = true, waiting = false, updated_at = now()
WHERE id = %s AND status = 'running' AND NOT publishing
RETURNING customer_id, product_type;

-- name: finish_cancel
UPDATE import_jobs
SET status = 'cancelled', error = NULL, finished_at = now(), updated_at = now(), cleanup_pending = true,
    waiting = false, stage_running = NULL
WHERE id = %s AND status = 'running' AND cancel_requested
RETURNING customer_id, product_type;

-- name: drop_queued_messages
-- A cancelled job's queued work is dropped here, so no worker thread is spent on it.
DELETE FROM dramatiq.queue WHERE state = 'queued' AND message -> 'args' ->> 0 = %s;

-- name: request_undo
UPDATE import_jobs SET undo_pending = true, updated_at = now()
WHERE id = %s AND status = 'succeeded'
RETURNING id;

-- name: mark_undone
UPDATE import_jobs SET status = 'undone', undone_at = now(), updated_at = now(), undo_pending = false
WHERE id = %s AND status = 'succeeded'
RETURNING id;

-- name: end_undo_request
UPDATE import_jobs SET undo_pending = false, updated_at = now() WHERE id = %s;

-- name: job_status
SELECT status, cancel_requested FROM import_jobs WHERE id = %s;

-- name: insert_replay
-- At most one replay of a job is queued, running or succeeded (import_jobs_one_replay): of
-- two requests at once, the second inserts nothing and answers with the first one's job.
INSERT INTO import_jobs (id, customer_id, product_type, blob_uri, options, replay_of)
VALUES (%(id)s, %(customer_id)s, %(product_type)s, %(blob_uri)s, %(options)s, %(replay_of)s)
ON CONFLICT (replay_of) WHERE status IN ('queued', 'running', 'succeeded') DO NOTHING
RETURNING id;

-- name: live_replay
SELECT {job_columns} FROM import_jobs
WHERE replay_of = %s AND status IN ('queued', 'running', 'succeeded');

-- name: callback_url
SELECT options ->> 'callback_url' AS callback_url FROM import_jobs WHERE id = %s;
