-- Fair turns (SPEC 15): a customer has at most `chunks_in_flight` chunk messages queued or
-- running at once. Its other planned chunks wait here unsent; each chunk that finishes sends
-- the next one, from the customer's running job with the fewest chunks in flight.
ALTER TABLE import_chunks ADD COLUMN sent boolean NOT NULL DEFAULT true;  -- existing plans: all sent
ALTER TABLE import_chunks ALTER COLUMN sent SET DEFAULT false;
CREATE INDEX import_chunks_unsent ON import_chunks (job_id, chunk_no) WHERE NOT sent;

ALTER TABLE import_jobs ADD COLUMN chunks_sent integer NOT NULL DEFAULT 0;
CREATE INDEX import_jobs_running_customer ON import_jobs (customer_id, created_at) WHERE status = 'running';
