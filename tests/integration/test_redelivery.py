"""Each stage is safe to run twice: a redelivered chunk or publish never duplicates a row.

The stages are called in this process (no workers) so the test controls the redelivery.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from service.config import Config
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import cleanup, pipeline
from service.stages import fetch as fetching
from service.stages import insert as closing
from service.stages import services as stages
from service.stages import validate as validating
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import JobStore, migrate
from tests.conftest import Databases, query


@pytest.fixture
def services(databases: Databases, tmp_path: Path) -> stages.Services:
    app, customer = databases.create("app"), databases.create("cust")
    migrate(app)
    config = Config(app_db_dsn=app, blob_root=tmp_path, customers={"acme": customer}, chunk_rows=4)
    return stages.Services(config, JobStore(app, dispatch=dispatch), ProductRegistry.load(config.schemas_dir), app)


def start_job(services: stages.Services, rows: int) -> str:
    path = services.config.blob_root / "acme" / "users.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("external_id,email\n" + "".join(f"u{i},u{i}@example.com\n" for i in range(1, rows + 1)))
    body = {"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)}
    job, _ = enqueue(check_request(body, services.config, services.products), services.jobs)
    pipeline.run_stage(services, fetching.fetch, job.id)
    pipeline.run_stage(services, fetching.parse, job.id)
    return job.id


def test_a_chunk_run_twice_after_a_crash_before_it_was_counted_stages_its_rows_once(
    services: stages.Services,
) -> None:
    job_id = start_job(services, 10)  # chunks of 4: rows 1-4, 5-8, 9-10
    pipeline.run_chunk(services, job_id, 0)
    # As if the worker died after staging but before counting: the chunk is not done.
    query(services.app_dsn, "UPDATE import_chunks SET done = false WHERE job_id = %s AND chunk_no = 0", (job_id,))
    query(
        services.app_dsn,
        "UPDATE import_jobs SET chunks_done = 0, rows_total = 0, rows_valid = 0 WHERE id = %s",
        (job_id,),
    )
    pipeline.run_chunk(services, job_id, 0)
    pipeline.run_chunk(services, job_id, 0)  # done now: a no-op
    for chunk in (1, 2):
        pipeline.run_chunk(services, job_id, chunk)
    pipeline.run_stage(services, closing.insert, job_id)
    pipeline.run_stage(services, closing.insert, job_id)  # redelivered publish
    job = services.jobs.get(job_id)
    assert job is not None and job.status == "succeeded", job
    assert (job.rows_total, job.rows_valid, job.rows_inserted) == (10, 10, 10)
    rows = query(
        services.config.customers["acme"], "SELECT source_row FROM users WHERE job_id = %s ORDER BY 1", (job_id,)
    )
    assert [r for (r,) in rows] == list(range(1, 11))


def test_a_failed_job_loses_the_rows_its_chunks_inserted_and_is_swept_once_more(services: stages.Services) -> None:
    job_id = start_job(services, 6)
    pipeline.run_chunk(services, job_id, 0)
    customer = services.config.customers["acme"]
    assert query(customer, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(4,)]
    job = services.jobs.get(job_id)
    assert job is not None
    cleanup.fail_job(services, job, "stopped by the test")
    assert query(customer, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(0,)]
    # The sweep deletes once more later, for chunks that were still running at the failure.
    assert [j.id for j in services.jobs.cleanups_due(0)] == [job_id]
    for due in services.jobs.cleanups_due(0):
        assert cleanup.discard_rows(services, due)
        services.jobs.cleanup_done(due.id)
    assert services.jobs.cleanups_due(0) == []


def test_parse_run_twice_plans_each_chunk_once(services: stages.Services) -> None:
    job_id = start_job(services, 9)
    pipeline.run_stage(services, fetching.parse, job_id)
    chunks = query(
        services.app_dsn,
        "SELECT chunk_no, first_row, row_count FROM import_chunks WHERE job_id = %s ORDER BY 1",
        (job_id,),
    )
    assert chunks == [(0, 1, 4), (1, 5, 4), (2, 9, 1)]
    messages = query(
        services.app_dsn,
        "SELECT message FROM dramatiq.queue WHERE message->>'actor_name' = 'import_validate'",
    )
    planned = sorted(tuple(m["args"]) for (m,) in messages if m["args"][0] == job_id)
    assert planned == [(job_id, 0), (job_id, 1), (job_id, 2)], json.dumps(planned)


def test_fetch_redelivered_after_the_planning_committed_reads_nothing_and_keeps_the_job(
    services: stages.Services,
) -> None:
    job_id = start_job(services, 9)
    path = services.config.blob_root / "acme" / "users.csv"
    stat = path.stat()
    path.write_bytes(b"\0" * stat.st_size)  # unreadable now, same size and mtime: the plan still holds
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    pipeline.run_stage(services, fetching.fetch, job_id)  # the worker died before the ack
    job = services.jobs.get(job_id)
    assert (job.status, job.chunks_total, job.error) == ("running", 3, None)
    row = query(services.app_dsn, "SELECT stage_running, stage_crashes FROM import_jobs WHERE id = %s", (job_id,))
    assert row == [(None, 0)]
    assert query(services.app_dsn, "SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,)) == [(3,)]


def test_a_chunk_that_commits_after_its_job_was_failed_brings_no_rows_back(services: stages.Services) -> None:
    """The window a chunk left open: its COPY committed after the failure's last discard, and
    the failed job showed rows until that chunk deleted them again."""
    job_id = start_job(services, 10)  # chunks of 4
    pipeline.run_chunk(services, job_id, 0)
    job = services.jobs.get(job_id)
    assert job is not None
    # Chunk 1 has begun (a worker holds it) when the job fails.
    begun = services.jobs.begin_chunk(job_id, 1)
    assert begun is not None
    cleanup.fail_job(services, job, "stopped by the test")
    customer = services.config.customers["acme"]
    assert query(customer, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(0,)]
    # Now the late chunk's COPY commits: nothing lands (before, its rows showed until the
    # chunk saw the job failed and deleted them again).
    held, work = begun  # the job as the chunk's worker loaded it (with its plan)
    store = services.customer("acme")
    prefix = store.copy_prefix(job_id, staged=False)
    late = io.BytesIO(f'{prefix}5\t{{"external_id": "u5", "email": "u5@example.com"}}\n'.encode())
    store.copy_chunk(job_id, "users", work.first_row, work.first_row + 3, late, staged=False, rerun=False)
    assert query(customer, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(0,)]
    assert query(customer, "SELECT count(*) FROM import_service.discarded WHERE job_id = %s", (job_id,)) == [(1,)]
    # The whole late chunk: counts nothing, leaves nothing.
    assert validating.validate(services, held, work)
    assert query(customer, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(0,)]
    failed = services.jobs.get(job_id)
    assert failed is not None and failed.status == "failed" and failed.rows_valid == 4
