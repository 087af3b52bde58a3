-- A failed job's rows are deleted from the customer table at once; this flag keeps the
-- job on the recovery sweep's list until a last delete has run after any chunk that was
-- still in flight at the time of the failure must have ended.
ALTER TABLE import_jobs ADD COLUMN cleanup_pending boolean NOT NULL DEFAULT false;
