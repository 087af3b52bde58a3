-- Count attempts that never ended (the worker died), apart from ordinary retries, so a
-- chunk or stage that kills its worker every time fails its job instead of looping forever.
ALTER TABLE import_chunks
    ADD COLUMN running boolean NOT NULL DEFAULT false,
    ADD COLUMN crashes integer NOT NULL DEFAULT 0;

ALTER TABLE import_jobs
    ADD COLUMN stage_running text,
    ADD COLUMN stage_crashes integer NOT NULL DEFAULT 0;
