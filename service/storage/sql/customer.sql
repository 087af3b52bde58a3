-- Named statements run in customer databases, loaded once by service/store.py (the only
-- module that writes them). {table} is a product table, {stage} a job's staging table and
-- {key} the product's x-key as a literal, all composed with psycopg2.sql.

-- name: product_table
CREATE TABLE IF NOT EXISTS {table} (
    id          bigserial PRIMARY KEY,
    data        jsonb NOT NULL,
    job_id      uuid NOT NULL,
    source_row  integer NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, source_row)
);

-- name: key_index
-- Upsert, replace and undo find rows by key; append jobs never need it, so it is made by the
-- first keyed job. Not unique: append jobs may have stored a key twice.
CREATE INDEX IF NOT EXISTS {index} ON {table} ((data ->> {key}));

-- name: service_schema
-- The service's own bookkeeping in the customer's database: what each job published (the
-- journal that makes a publish happen once) and the row versions undo restores.
CREATE SCHEMA IF NOT EXISTS import_service;
CREATE TABLE IF NOT EXISTS import_service.publishes (
    job_id         uuid PRIMARY KEY,
    product        text NOT NULL,
    mode           text NOT NULL,
    published_at   timestamptz NOT NULL DEFAULT now(),
    rows_inserted  bigint NOT NULL DEFAULT 0,
    rows_updated   bigint NOT NULL DEFAULT 0,
    rows_unchanged bigint NOT NULL DEFAULT 0,
    rows_duplicate bigint NOT NULL DEFAULT 0,
    rows_deleted   bigint NOT NULL DEFAULT 0,
    undone_at      timestamptz
);
-- One row per row a job updated or deleted: the row as it was before (undo puts it back).
CREATE TABLE IF NOT EXISTS import_service.history (
    job_id      uuid NOT NULL,
    op          text NOT NULL CHECK (op IN ('update', 'delete')),
    row_id      bigint NOT NULL,
    data        jsonb NOT NULL,
    old_job_id  uuid NOT NULL,
    source_row  integer NOT NULL,
    imported_at timestamptz
);
CREATE INDEX IF NOT EXISTS history_job ON import_service.history (job_id);
CREATE INDEX IF NOT EXISTS history_old_job ON import_service.history (old_job_id);
-- Every invalid row of every job (SPEC 14): its cells as read (a JSON array in the file's
-- column order, or for key=value files an object in the record's key order; `json`, not
-- `jsonb`, keeps that order) and its errors [{"field", "message"}].
CREATE TABLE IF NOT EXISTS import_service.rejects (
    job_id     uuid NOT NULL,
    source_row integer NOT NULL,
    record     json NOT NULL,
    errors     jsonb NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, source_row)
);
-- Jobs whose rows were discarded (failed or cancelled): a chunk that commits later must not
-- bring rows back. A chunk's COPY and a discard take the job's lock (shared / exclusive), so
-- a COPY either commits before the discard's DELETE or sees this row and writes nothing.
CREATE TABLE IF NOT EXISTS import_service.discarded (
    job_id uuid PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now()
);
-- The cells of each chunk of a spreadsheet job: its fetch reads the sheet once and stores
-- them here, each chunk reads its own back (a sheet cannot be entered in the middle). They
-- go when the job ends (publish, journal, discard), or after two days whatever happened.
CREATE TABLE IF NOT EXISTS import_service.chunk_cells (
    job_id    uuid NOT NULL,
    chunk_no  integer NOT NULL,
    cells     bytea NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_no)
);

-- name: stage_table
-- One table per atomic job, filled chunk by chunk and dropped by the publish that reads it.
CREATE TABLE IF NOT EXISTS {stage} (source_row integer NOT NULL, data jsonb NOT NULL);

-- name: publish_lock
-- Publishes and undos of one product table take turns.
SELECT pg_advisory_xact_lock(hashtext('import-service:publish:' || %(product)s));

-- name: journal
SELECT * FROM import_service.publishes WHERE job_id = %(job)s;

-- name: journal_insert
INSERT INTO import_service.publishes
    (job_id, product, mode, rows_inserted, rows_updated, rows_unchanged, rows_duplicate, rows_deleted)
VALUES (%(job)s, %(product)s, %(mode)s, %(inserted)s, %(updated)s, %(unchanged)s, %(duplicate)s, %(deleted)s)
ON CONFLICT (job_id) DO NOTHING;

-- name: stage_count
SELECT count(*) FROM {stage};

-- name: publish_append
INSERT INTO {table} (data, job_id, source_row)
SELECT data, %(job)s, source_row FROM {stage} ORDER BY source_row;

-- name: distinct_keys
SELECT count(*) AS n FROM (SELECT data ->> {key} FROM {stage} GROUP BY 1) keys;

-- name: all_rows
-- No key repeats: the file's rows are the staged rows as they are (no copy, no sort).
ANALYZE {stage};
CREATE TEMP VIEW import_src AS SELECT data ->> {key} AS k, source_row, data FROM {stage};

-- name: latest_by_key
-- The file's rows, one per key: the last occurrence wins.
CREATE TEMP TABLE import_src ON COMMIT DROP AS
SELECT DISTINCT ON (k) data ->> {key} AS k, source_row, data FROM {stage} ORDER BY k, source_row DESC;
ANALYZE import_src;

-- name: duplicates
-- Earlier occurrences of a key, each with the row that won.
SELECT s.source_row, w.source_row AS winner, w.k
FROM {stage} s JOIN import_src w ON w.k = s.data ->> {key}
WHERE s.source_row <> w.source_row
ORDER BY s.source_row
LIMIT %(limit)s;

-- name: match_keys
-- One join of the file's keys with the table: which rows they match, and the new data of
-- those that change (NULL when identical). Every later step reads this instead of joining again.
CREATE TEMP TABLE import_match ON COMMIT DROP AS
SELECT s.k, t.id, CASE WHEN t.data = s.data THEN NULL ELSE s.data END AS data, s.source_row
FROM import_src s JOIN {table} t ON t.data ->> {key} = s.k;

-- name: analyze_match
ANALYZE import_match;

-- name: keys_held_twice
SELECT k FROM import_match GROUP BY k HAVING count(*) > 1 ORDER BY k LIMIT 10;

-- name: upsert_update
-- Matched rows with other data: keep the old version (the statement reads the table as it
-- was before it), then overwrite.
WITH kept AS (
    INSERT INTO import_service.history (job_id, op, row_id, data, old_job_id, source_row, imported_at)
    SELECT %(job)s, 'update', t.id, t.data, t.job_id, t.source_row, t.imported_at
    FROM import_match m JOIN {table} t ON t.id = m.id
    WHERE m.data IS NOT NULL
)
UPDATE {table} t
SET data = m.data, job_id = %(job)s, source_row = m.source_row, imported_at = now()
FROM import_match m WHERE t.id = m.id AND m.data IS NOT NULL;

-- name: upsert_insert
INSERT INTO {table} (data, job_id, source_row)
SELECT s.data, %(job)s, s.source_row FROM import_src s
WHERE NOT EXISTS (SELECT 1 FROM import_match m WHERE m.k = s.k)
ORDER BY s.source_row;

-- name: kept_keys
-- The keys a replace keeps although no valid row of the file has them: each is the readable,
-- valid key of one of its invalid rows (SPEC 12), found by service.store._keep_rejected_keys.
CREATE TEMP TABLE import_kept (k text NOT NULL) ON COMMIT DROP;

-- name: kept_insert
INSERT INTO import_kept (k) VALUES %s;

-- name: analyze_kept
ANALYZE import_kept;

-- name: kept_count
-- The table rows replace_delete_sparing spares for those keys.
SELECT count(*) AS n FROM {table} t
WHERE t.data ->> {key} IN (SELECT k FROM import_kept)
  AND t.job_id <> %(job)s AND NOT EXISTS (SELECT 1 FROM import_match m WHERE m.id = t.id);

-- name: replace_delete
-- Rows no key of the file matched, other than those just inserted: keep them in the
-- history, then delete.
WITH gone AS (
    DELETE FROM {table} t
    WHERE t.job_id <> %(job)s AND NOT EXISTS (SELECT 1 FROM import_match m WHERE m.id = t.id)
    RETURNING t.*
)
INSERT INTO import_service.history (job_id, op, row_id, data, old_job_id, source_row, imported_at)
SELECT %(job)s, 'delete', id, data, job_id, source_row, imported_at FROM gone;

-- name: replace_delete_sparing
-- The same, sparing also the rows whose key is on an invalid line of the file (import_kept).
WITH gone AS (
    DELETE FROM {table} t
    WHERE t.job_id <> %(job)s AND NOT EXISTS (SELECT 1 FROM import_match m WHERE m.id = t.id)
      AND NOT EXISTS (SELECT 1 FROM import_kept k WHERE k.k = t.data ->> {key})
    RETURNING t.*
)
INSERT INTO import_service.history (job_id, op, row_id, data, old_job_id, source_row, imported_at)
SELECT %(job)s, 'delete', id, data, job_id, source_row, imported_at FROM gone;

-- name: undo_conflicts
-- Every job, not undone, to undo before this one, newest first: those that changed rows this
-- job wrote or now hold a key it deleted, and so on from each of them (jobs 1, 2 and 3 that
-- each changed the row job 0 wrote are all named at once). An undone job keeps no history and
-- holds no row, so it is never named.
WITH RECURSIVE later (job_id) AS (
    SELECT %(job)s::uuid
    UNION
    SELECT c.job_id FROM later l CROSS JOIN LATERAL (
        SELECT h.job_id FROM import_service.history h WHERE h.old_job_id = l.job_id AND h.job_id <> l.job_id
        UNION
        SELECT t.job_id FROM import_service.history h
        JOIN {table} t ON t.data ->> {key} = h.data ->> {key}
        WHERE h.job_id = l.job_id AND h.op = 'delete' AND t.job_id <> l.job_id
    ) c
)
SELECT l.job_id, p.published_at FROM later l LEFT JOIN import_service.publishes p ON p.job_id = l.job_id
WHERE l.job_id <> %(job)s::uuid
ORDER BY p.published_at DESC NULLS FIRST, l.job_id;

-- name: undo_updates
UPDATE {table} t
SET data = h.data, job_id = h.old_job_id, source_row = h.source_row, imported_at = h.imported_at
FROM import_service.history h
WHERE h.job_id = %(job)s AND h.op = 'update' AND t.id = h.row_id;

-- name: undo_inserts
DELETE FROM {table} WHERE job_id = %(job)s;

-- name: undo_deletes
INSERT INTO {table} (id, data, job_id, source_row, imported_at)
SELECT row_id, data, old_job_id, source_row, imported_at FROM import_service.history
WHERE job_id = %(job)s AND op = 'delete'
ORDER BY row_id;

-- name: undo_done
DELETE FROM import_service.history WHERE job_id = %(job)s;
UPDATE import_service.publishes SET undone_at = now() WHERE job_id = %(job)s;

-- name: purge_history
-- Undo history past the retention period (SPEC 13).
DELETE FROM import_service.history h USING import_service.publishes p
WHERE p.job_id = h.job_id AND p.published_at < now() - make_interval(days => %(days)s);
DELETE FROM import_service.publishes WHERE published_at < now() - make_interval(days => %(days)s);
DELETE FROM import_service.rejects WHERE stored_at < now() - make_interval(days => %(days)s);
DELETE FROM import_service.chunk_cells WHERE stored_at < now() - interval '2 days';
DELETE FROM import_service.discarded WHERE at < now() - interval '2 days';
