-- Files handed to the service itself (SPEC 19): one row per tus upload. Its bytes live in the
-- blob store (service/sources/parts.py); this row says whose they are, how many have arrived
-- and, once all have, the blob_uri a job imports. Every statement may run again.
CREATE TABLE IF NOT EXISTS import_uploads (
    id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    filename text NOT NULL,
    length bigint NOT NULL CHECK (length >= 0),
    -- Bytes stored and counted: a PATCH resumes here. Bytes past it on disk were never
    -- confirmed (a request cut off, a checksum that failed) and are cut away.
    received bigint NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    metadata jsonb NOT NULL DEFAULT '{}',
    blob_uri text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    finished_at timestamptz,
    CHECK ((finished_at IS NULL) = (blob_uri IS NULL))
);

-- The sweep's two questions: unfinished uploads past their expiry, finished ones past retention.
CREATE INDEX IF NOT EXISTS import_uploads_unfinished ON import_uploads (expires_at) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS import_uploads_finished ON import_uploads (finished_at) WHERE finished_at IS NOT NULL;
