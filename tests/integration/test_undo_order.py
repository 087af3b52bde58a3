"""An undo refusal names every later job to undo first, newest first (SPEC 13), not only the
jobs that changed the undone job's own version of a row: jobs 1, 2 and 3 each changed rows
job 0 wrote, one after the other, through real workers and a real customer database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.errors import JobConflict
from service.stages import control
from service.stages.services import Services
from tests.conftest import Databases, query
from tests.integration.conftest import Pipeline, make_pipeline

HEADER = "external_id,email,first_name\n"


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from make_pipeline(databases, tmp_path_factory, ["o1", "o2"])


@pytest.fixture(scope="module")
def services(pipeline: Pipeline) -> Services:
    return Services(pipeline.config, pipeline.jobs, pipeline.products, pipeline.app_dsn)


def upsert(pipeline: Pipeline, customer: str, *rows: tuple[str, str], mode: str = "upsert") -> str:
    """Run an upsert (or replace) of (external_id, first_name) rows; the job's id."""
    content = HEADER + "".join(f"{key},{key}@x.io,{name}\n" for key, name in rows)
    job = pipeline.run(customer, "users", "u.csv", content.encode(), {"mode": mode})
    assert job.status == "succeeded", job.error
    return job.id


def refusal(services: Services, job_id: str) -> list[str]:
    """The job ids an undo refusal names, in the order it names them."""
    job = services.jobs.get(job_id)
    assert job is not None
    with pytest.raises(JobConflict) as refused:
        control.undo(services, job)
    assert "newest first: " in str(refused.value)
    return str(refused.value).split("newest first: ", 1)[1].split(", ")


def undo(services: Services, job_id: str) -> None:
    job = services.jobs.get(job_id)
    assert job is not None
    undone, complete = control.undo(services, job)
    assert complete and undone.status == "undone"


def test_undo_names_every_later_job_that_changed_the_rows_newest_first_and_works_once_they_are_undone(
    pipeline: Pipeline, services: Services
) -> None:
    first = upsert(pipeline, "o1", ("a", "v0"), ("b", "v0"), ("c", "v0"))
    one = upsert(pipeline, "o1", ("a", "v1"))  # changes first's a
    two = upsert(pipeline, "o1", ("a", "v2"), ("b", "v2"))  # changes one's a, first's b
    three = upsert(pipeline, "o1", ("b", "v3"))  # changes two's b only
    assert refusal(services, first) == [three, two, one]
    assert refusal(services, one) == [three, two]
    for later in (three, two, one):
        undo(services, later)
    undo(services, first)
    assert query(pipeline.customer_dsns["o1"], "SELECT count(*) FROM users") == [(0,)]


def test_a_job_that_took_a_key_a_later_replace_deleted_is_named_too(pipeline: Pipeline, services: Services) -> None:
    first = upsert(pipeline, "o2", ("k", "v0"), ("m", "v0"))
    replaced = upsert(pipeline, "o2", ("m", "v1"), mode="replace")  # deletes first's k
    back = upsert(pipeline, "o2", ("k", "again"))  # holds the key replace deleted
    assert refusal(services, first) == [back, replaced]
    undo(services, back)
    undo(services, replaced)
    undo(services, first)
    assert query(pipeline.customer_dsns["o2"], "SELECT count(*) FROM users") == [(0,)]
