"""No stuck jobs: work that Dramatiq gives up on, or that vanished, ends its job `failed`."""

from __future__ import annotations

from typing import Any

from service import blob
from service.jobs import JobStore
from service.messages import dispatch
from service.requests import check_request, enqueue
from tests.conftest import query
from tests.integration.conftest import Pipeline

USERS = b"external_id,email\nu1,a@example.com\nu2,b@example.com\n"


def test_an_unexpected_error_is_retried_then_fails_the_job_with_the_reason(pipeline: Pipeline) -> None:
    # A customer table of the same name but another shape: publishing into it cannot work.
    query(pipeline.customer_dsns["globex"], "CREATE TABLE users (id integer PRIMARY KEY, name text)")
    job = pipeline.run("globex", "users", "u.csv", USERS)
    assert job.status == "failed"
    assert "import_insert" in job.error and "source_row" in job.error
    assert query(pipeline.customer_dsns["globex"], "SELECT count(*) FROM users") == [(0,)]
    dead = query(pipeline.app_dsn, "SELECT count(*) FROM dramatiq.queue WHERE state = 'rejected'")
    assert dead[0][0] >= 1


def test_a_job_whose_message_vanished_is_failed_by_the_sweep(pipeline: Pipeline) -> None:
    # The job's message goes to a queue no worker reads, then is deleted, as if lost;
    # the job is made to look a minute old.
    def nowhere(actor_name: str, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
        _, message_id, message = dispatch(actor_name, args)
        return "nowhere", message_id, dict(message, queue_name="nowhere")

    jobs = JobStore(pipeline.app_dsn, dispatch=nowhere, maxconn=1)
    request = check_request(
        {
            "customer_id": "acme",
            "product_type": "users",
            "blob_uri": blob.uri_for(pipeline.put("acme", "lost.csv", USERS)),
        },
        pipeline.config,
        pipeline.products,
    )
    job, _ = enqueue(request, jobs)
    jobs.close()
    query(pipeline.app_dsn, "DELETE FROM dramatiq.queue WHERE queue_name = 'nowhere'")
    query(pipeline.app_dsn, "UPDATE import_jobs SET updated_at = now() - interval '2 minutes' WHERE id = %s", (job.id,))
    ended = pipeline.wait(job.id, timeout=40)  # the sweep runs every 10 s or so
    assert ended.status == "failed" and "vanished" in ended.error
