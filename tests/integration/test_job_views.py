"""A job's plan (its file's header: up to max_columns names) is not loaded by the views:
`GET /jobs/<id>`, `GET /jobs`, WatchJob polls and the status page read jobs without it, so a
huge header costs them nothing and the answer stays small (issue 18, point 2)."""

from __future__ import annotations

from collections.abc import Iterator

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
from tests.conftest import Databases

TOKEN = "tok-views"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COLUMNS = 400_000  # about 8 MB of header names, as a hostile CSV header could have made
MAX_VIEW_BYTES = 256 * 1024
VIEW_QUERIES = ("job", "list_jobs", "live_replay", "orphaned_jobs", "cleanups_due")


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
    assert "plan" not in selected and "*" not in selected, Q[name]
    assert "rows_total" in selected and "cancel_requested" in selected
