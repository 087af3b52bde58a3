-- Uploads that go straight to a customer's S3, Azure or GCS area (SPEC 19): their bytes are
-- parts of a multipart upload in that store, never a file here. Every statement may run again.
--   store:     which multipart upload: {"uri": the object it makes, "part_bytes": the size of
--              every part but the last, and the store's own id (S3's UploadId)}; NULL for an
--              upload into the blob root.
--   parts:     the parts counted so far, in order: what completing the upload names.
--   tail:      counted bytes not yet in a part (less than part_bytes): a request may end
--              anywhere, while a store's parts (S3's) must be at least 5 MiB but the last.
--   next_part: the last part number handed out. Each part gets a number of its own, so two
--              requests racing for one offset never overwrite each other's parts; the one that
--              counts first wins and the other's parts are never named.
ALTER TABLE import_uploads ADD COLUMN IF NOT EXISTS store jsonb;
ALTER TABLE import_uploads ADD COLUMN IF NOT EXISTS parts jsonb NOT NULL DEFAULT '[]';
ALTER TABLE import_uploads ADD COLUMN IF NOT EXISTS tail bytea NOT NULL DEFAULT '';
ALTER TABLE import_uploads ADD COLUMN IF NOT EXISTS next_part integer NOT NULL DEFAULT 0;
