"""What fail_job does with an atomic job that may have committed (SPEC 12, SPEC 8): every way a
job is failed (the retry window, a dead letter, the sweep of orphaned jobs) goes through it.
Real app and customer databases; the customer database made unreachable by its DSN."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from service.config import Config
from service.schema.products import ProductRegistry
from service.stages import cleanup
from service.stages import services as stages
from service.stages.insert import WAITING
from service.stages.messages import dispatch
from service.storage.jobs import Job, JobStore, migrate
from service.storage.store import CustomerStore
from tests.conftest import Databases, query
from tests.e2e.conftest import free_port


@dataclass
class Stand:
    app: str
    customer: str
    jobs: JobStore
    up: stages.Services  # the customer database reachable
    down: stages.Services  # the same customer, its database unreachable

    def job(self, publishing: bool, days_old: int = 0) -> Job:
        """A running upsert job, as if its stages ran; `publishing`: it claimed its commit."""
        job, _ = self.jobs.create_job("acme", "users", "file:///nowhere.csv", {"mode": "upsert"})
        query(
            self.app,
            "UPDATE import_jobs SET status = 'running', publishing = %s, rows_total = 2, rows_valid = 2, "
            "started_at = now() - make_interval(days => %s) WHERE id = %s",
            (publishing, days_old, job.id),
        )
        fresh = self.jobs.get(job.id)
        assert fresh is not None
        return fresh

    def journal(self, job: Job) -> None:
        """Record the job's publish in the customer database, as its COMMIT would have."""
        query(
            self.customer,
            "INSERT INTO import_service.publishes (job_id, product, mode, rows_inserted, rows_updated) "
            "VALUES (%s, 'users', 'upsert', 1, 1)",
            (job.id,),
        )

    def waiting_lines(self, job: Job) -> int:
        return [line.message for line in self.jobs.logs(job.id)].count(WAITING)


@pytest.fixture(scope="module")
def stand(databases: Databases) -> Iterator[Stand]:
    app, customer = databases.create("app"), databases.create("acme")
    migrate(app)
    CustomerStore(customer).prepare("users", "external_id")
    jobs = JobStore(app, dispatch=dispatch)
    products = ProductRegistry.load(Config().schemas_dir)
    closed = f"host=127.0.0.1 port={free_port()} dbname=gone user=nobody"
    up = stages.Services(Config(app_db_dsn=app, customers={"acme": customer}), jobs, products, app)
    down = stages.Services(Config(app_db_dsn=app, customers={"acme": closed}), jobs, products, app)
    yield Stand(app, customer, jobs, up, down)
    jobs.close()


def test_a_job_that_claimed_its_commit_stays_running_while_the_journal_cannot_be_read(stand: Stand) -> None:
    job = stand.job(publishing=True)
    for error in ("customer database unreachable (gave up after 60 s)", "its queued work vanished"):
        assert cleanup.fail_job(stand.down, job, error) is False  # the retry window, then the sweep
    after = stand.jobs.get(job.id)
    assert after is not None and after.status == "running" and after.error is None
    assert stand.waiting_lines(job) == 1  # said once, however often it is asked


def test_once_readable_the_journal_decides_committed_means_succeeded(stand: Stand) -> None:
    job = stand.job(publishing=True)
    assert cleanup.fail_job(stand.down, job, "gave up") is False
    stand.journal(job)
    assert cleanup.fail_job(stand.up, job, "its queued work vanished") is True
    after = stand.jobs.get(job.id)
    assert after is not None and after.status == "succeeded"
    assert (after.rows_inserted, after.rows_updated) == (1, 1)


def test_once_readable_the_journal_decides_absent_means_failed(stand: Stand) -> None:
    job = stand.job(publishing=True)
    assert cleanup.fail_job(stand.down, job, "gave up") is False
    assert cleanup.fail_job(stand.up, job, "its queued work vanished") is True
    after = stand.jobs.get(job.id)
    assert after is not None and after.status == "failed" and after.error == "its queued work vanished"


def test_a_job_that_never_claimed_its_commit_fails_at_once(stand: Stand) -> None:
    job = stand.job(publishing=False)
    assert cleanup.fail_job(stand.down, job, "customer database unreachable (gave up after 60 s)") is True
    after = stand.jobs.get(job.id)
    assert after is not None and after.status == "failed"
    assert stand.waiting_lines(job) == 0


def test_the_wait_ends_when_the_journal_would_be_purged(stand: Stand) -> None:
    days = stand.down.config.undo_retention_days
    job = stand.job(publishing=True, days_old=days + 1)
    assert cleanup.fail_job(stand.down, job, "its queued work vanished") is True
    after = stand.jobs.get(job.id)
    assert after is not None and after.status == "failed"
    assert after.error is not None and "outcome of its publish is unknown" in after.error
    assert json.dumps(after.error).count(str(days)) == 1
