"""A job's plan (its file's header: up to max_columns names) is not loaded by the views:
`GET /jobs/<id>`, `GET /jobs`, WatchJob polls and the status page read jobs without it, so a
huge header costs them nothing and the answer stays small (issue 18, point 2). They read only
the plan's small `format` object, for the job's `source` (issue 20, point 6; SPEC 18)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import falcon.testing
import psycopg2.extras
import pytest

from service.config import Config
from service.edges.api import Api
from service.edges.rest.app import create_app
from service.edges.wiring import Edge
from service.schema.products import ProductRegistry
from service.stages.messages import dispatch
from service.storage.app_db import Q
from service.storage.jobs import JobStore, migrate
from service.storage.views import job_view
from tests.conftest import Databases
from tests.integration.conftest import Pipeline

TOKEN = "tok-views"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COLUMNS = 400_000  # about 8 MB of header names, as a hostile CSV header could have made
MAX_VIEW_BYTES = 256 * 1024
VIEW_QUERIES = ("job", "list_jobs", "live_replay", "orphaned_jobs", "cleanups_due")
# The one part of the plan the view queries select: its format, for the job's source.
PLAN_FORMAT = "plan->'format' AS plan_format"
CSV_FORMAT = {"kind": "csv", "encoding": "utf-8", "delimiter": ",", "sheet": None, "header_row": None}
USERS_CSV = b"external_id,email,age\nu1,a@example.com,30\nu2,b@example.com,31\n"


@pytest.fixture(scope="module")
def jobs(databases: Databases) -> Iterator[JobStore]:
    dsn = databases.create("views")
    migrate(dsn)
    store = JobStore(dsn, dispatch=dispatch, maxconn=2)
    yield store
    store.close()


@pytest.fixture(scope="module")
def job_id(jobs: JobStore) -> str:
    """A job whose stored plan holds a huge header."""
    job, _ = jobs.create_job("acme", "users", "file:///b/acme/wide.csv", {})
    names = [f"column_{n:07d}" for n in range(COLUMNS)]
    plan = {"format": {"kind": "csv"}, "header": {"names": names}, "columns": [None] * COLUMNS, "size": 1}
    with jobs.transaction() as cur:
        cur.execute("UPDATE import_jobs SET plan = %s WHERE id = %s", (psycopg2.extras.Json(plan), job.id))
    return job.id


@pytest.fixture(scope="module")
def client(jobs: JobStore) -> falcon.testing.TestClient:
    config = Config(app_db_dsn=jobs.dsn, tokens={TOKEN: ("*",)})
    api = Api(config, jobs, ProductRegistry.load(config.schemas_dir))
    return falcon.testing.TestClient(create_app(Edge(config, jobs.dsn, api)))


def test_get_and_list_answer_under_256_kib_whatever_the_header(client: falcon.testing.TestClient, job_id: str) -> None:
    one = client.simulate_get(f"/jobs/{job_id}", headers=AUTH)
    assert one.status_code == 200 and one.json["job_id"] == job_id
    assert len(one.content) < MAX_VIEW_BYTES
    assert one.json["source"] == {"scheme": "file", "compression": None, "format": "csv", "member": None}
    listed = client.simulate_get("/jobs?limit=1000", headers=AUTH)
    assert listed.status_code == 200 and [job["job_id"] for job in listed.json["jobs"]] == [job_id]
    assert len(listed.content) < MAX_VIEW_BYTES


def test_job_reads_leave_the_plan_in_the_database_and_the_stages_still_get_it(jobs: JobStore, job_id: str) -> None:
    job = jobs.get(job_id)
    assert job is not None and job.plan is None
    assert [listed.plan for listed in jobs.list_jobs(None, None, None, 10)] == [None]
    plan = jobs.plan(job_id)
    assert plan is not None and len(plan["header"]["names"]) == COLUMNS


@pytest.mark.parametrize("name", VIEW_QUERIES)
def test_the_view_queries_select_every_column_but_the_plan(name: str) -> None:
    selected = Q[name].split("FROM import_jobs", 1)[0]
    assert "plan" not in selected.replace(PLAN_FORMAT, "") and "*" not in selected, Q[name]
    assert "rows_total" in selected and "cancel_requested" in selected


def planned_job(jobs: JobStore, blob_uri: str, fmt: dict[str, Any], options: dict[str, Any] | None = None) -> str:
    """A job whose stored plan reads its file with this format (a small header)."""
    job, _ = jobs.create_job("acme", "users", blob_uri, options or {})
    plan = {"format": fmt, "header": {"names": ["external_id"], "data_start": 12, "data_line": 2}, "size": 30}
    with jobs.transaction() as cur:
        cur.execute("UPDATE import_jobs SET plan = %s WHERE id = %s", (psycopg2.extras.Json(plan), job.id))
    return job.id


def source(found: dict[str, Any]) -> tuple[Any, ...]:
    """A view's source as (scheme, compression, format, member)."""
    return tuple(found["source"][name] for name in ("scheme", "compression", "format", "member"))


def test_a_plan_with_compression_and_a_member_shows_them_in_get_and_list(
    client: falcon.testing.TestClient, jobs: JobStore
) -> None:
    fmt = {**CSV_FORMAT, "compression": "gzip", "member": "a/b.csv"}
    job_id = planned_job(jobs, "S3://imports/acme/exports.zip", fmt, {"format": "tsv"})
    one = client.simulate_get(f"/jobs/{job_id}", headers=AUTH)
    assert one.status_code == 200 and source(one.json) == ("s3", "gzip", "csv", "a/b.csv")
    listed = client.simulate_get("/jobs?limit=1000", headers=AUTH).json["jobs"]
    assert [source(job) for job in listed if job["job_id"] == job_id] == [("s3", "gzip", "csv", "a/b.csv")]


def test_a_plan_written_before_compression_and_members_shows_them_null(
    client: falcon.testing.TestClient, jobs: JobStore
) -> None:
    job_id = planned_job(jobs, "file:///b/acme/old.tsv", {**CSV_FORMAT, "kind": "tsv", "delimiter": "\t"})
    answer = client.simulate_get(f"/jobs/{job_id}", headers=AUTH)
    assert source(answer.json) == ("file", None, "tsv", None)


def test_a_queued_job_shows_its_format_option_before_planning_and_null_without_one(
    client: falcon.testing.TestClient, jobs: JobStore
) -> None:
    kv, _ = jobs.create_job("acme", "courses", "gs://bucket/acme/courses.txt", {"format": "kv"})
    plain, _ = jobs.create_job("acme", "users", "https://files.example/acme/users", {})
    assert source(client.simulate_get(f"/jobs/{kv.id}", headers=AUTH).json) == ("gs", None, "kv", None)
    assert source(client.simulate_get(f"/jobs/{plain.id}", headers=AUTH).json) == ("https", None, None, None)


def test_a_job_a_stage_loaded_with_its_whole_plan_shows_the_same_source(jobs: JobStore) -> None:
    fmt = {**CSV_FORMAT, "compression": "zstd", "member": None}
    job_id = planned_job(jobs, "az://box/acme/users.csv.zst", fmt)
    viewed = jobs.get(job_id)
    assert viewed is not None
    staged = dataclasses.replace(viewed, plan=jobs.plan(job_id))  # as webhooks get it from a stage
    assert source(job_view(staged)) == source(job_view(viewed)) == ("az", "zstd", "csv", None)


def test_a_plain_csv_file_run_by_real_workers_shows_file_no_compression_csv_no_member(pipeline: Pipeline) -> None:
    job = pipeline.run("acme", "users", "users.csv", USERS_CSV)
    assert job.status == "succeeded", job.error
    assert source(job_view(job)) == ("file", None, "csv", None)
