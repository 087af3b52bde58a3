-- A cancel that deletes rows before it shows, and one replay at a time (SPEC 13-14).
-- Every statement may run again (IF NOT EXISTS, an idempotent backfill).

-- Internal: a running streaming job being cancelled. It takes no new work; its rows are
-- deleted, and only then does its status read `cancelled` (a reader never sees a
-- cancelled job with rows in the table).
ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS cancel_requested boolean NOT NULL DEFAULT false;

-- The job a replay job replays (as its options' replay_of), so that the index below holds
-- at most one replay of a job that is queued, running or succeeded: two requests at once
-- (a double click, a client's retry) make one job.
ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS replay_of uuid;

-- Replays made before: the earliest live one of each job takes the column, so that a second
-- one made by the old race does not stop the index from being built.
UPDATE import_jobs j SET replay_of = (j.options ->> 'replay_of')::uuid
FROM (
    SELECT DISTINCT ON (options ->> 'replay_of') id FROM import_jobs
    WHERE options ->> 'replay_of' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
      AND status IN ('queued', 'running', 'succeeded')
    ORDER BY options ->> 'replay_of', created_at, id
) earliest
WHERE j.id = earliest.id AND j.replay_of IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM import_jobs o
      WHERE o.replay_of = (j.options ->> 'replay_of')::uuid AND o.status IN ('queued', 'running', 'succeeded'));

CREATE UNIQUE INDEX IF NOT EXISTS import_jobs_one_replay ON import_jobs (replay_of)
    WHERE status IN ('queued', 'running', 'succeeded');
