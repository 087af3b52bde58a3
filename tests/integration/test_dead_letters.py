"""No stuck jobs: work that Dramatiq gives up on, or that vanished, ends its job `failed`."""

from __future__ import annotations

from service.sources import blob
from tests.conftest import query
from tests.integration.conftest import Pipeline

USERS = b"external_id,email\nu1,a@example.com\nu2,b@example.com\n"


def test_a_customer_table_of_another_shape_fails_the_job_with_the_databases_reason(pipeline: Pipeline) -> None:
    query(pipeline.customer_dsns["globex"], "CREATE TABLE users (id integer PRIMARY KEY, name text)")
    job = pipeline.run("globex", "users", "u.csv", USERS)
    assert job.status == "failed"
    assert "refused the import" in job.error and "job_id" in job.error
    assert query(pipeline.customer_dsns["globex"], "SELECT count(*) FROM users") == [(0,)]


def test_an_unexpected_error_is_retried_then_fails_the_job_with_the_reason(pipeline: Pipeline) -> None:
    # A job whose product has no schema in the worker (as if its schema file was removed after
    # the enqueue): nothing the stage expects, so Dramatiq retries, gives up, dead-letters it.
    path = pipeline.put("acme", "ghost.csv", USERS)
    job, _ = pipeline.jobs.create_job("acme", "ghosts", blob.uri_for(path), {})
    ended = pipeline.wait(job.id, timeout=60)
    assert ended.status == "failed"
    assert "import_fetch" in ended.error and "ghosts" in ended.error
    dead = query(pipeline.app_dsn, "SELECT count(*) FROM dramatiq.queue WHERE state = 'rejected'")
    assert dead[0][0] >= 1


def test_a_job_whose_message_vanished_is_failed_by_the_sweep(pipeline: Pipeline) -> None:
    # The job's message is parked where no worker reads it, then deleted, as if lost;
    # the job is made to look two minutes old.
    job = pipeline.enqueue_held("acme", "users", pipeline.put("acme", "lost.csv", USERS))
    query(pipeline.app_dsn, "DELETE FROM dramatiq.queue WHERE message->'args'->>0 = %s", (job.id,))
    query(pipeline.app_dsn, "UPDATE import_jobs SET updated_at = now() - interval '2 minutes' WHERE id = %s", (job.id,))
    ended = pipeline.wait(job.id, timeout=40)  # the sweep runs every 10 s or so
    assert ended.status == "failed" and "vanished" in ended.error
