"""Write modes, atomic publish, cancel and undo (SPEC 12-13) through real workers and databases.

Each test has a customer (and so a customer database) of its own: replace and undo act on
whole tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.errors import JobConflict
from service.stages import control
from service.stages.services import Services
from service.storage.jobs import Job
from tests.conftest import Databases, query
from tests.integration.conftest import Pipeline, make_pipeline

HEADER = "external_id,email,first_name\n"
CUSTOMERS = [f"c{i}" for i in range(1, 15)]


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from make_pipeline(databases, tmp_path_factory, CUSTOMERS)


@pytest.fixture(scope="module")
def services(pipeline: Pipeline) -> Services:
    return Services(pipeline.config, pipeline.jobs, pipeline.products, pipeline.app_dsn)


def users(*rows: tuple[str, str] | tuple[str, str, str]) -> bytes:
    """A users CSV from (external_id, email[, first_name]) rows."""
    lines = [",".join((*row, "")[:3]) for row in rows]
    return (HEADER + "".join(f"{line}\n" for line in lines)).encode()


def table(pipeline: Pipeline, customer: str) -> list[tuple[Any, ...]]:
    """Every row of the customer's users table, as (id, data, job_id, source_row, imported_at)."""
    return query(
        pipeline.customer_dsns[customer],
        "SELECT id, data, job_id::text, source_row, imported_at FROM users ORDER BY id",
    )


def by_key(pipeline: Pipeline, customer: str) -> dict[str, dict[str, Any]]:
    return {row[1]["external_id"]: row[1] for row in table(pipeline, customer)}


def counts(job: Job) -> tuple[int, int, int, int, int]:
    return job.rows_inserted, job.rows_updated, job.rows_unchanged, job.rows_duplicate, job.rows_deleted


def warnings_of(pipeline: Pipeline, job_id: str) -> list[tuple[int, str]]:
    return query(
        pipeline.app_dsn,
        "SELECT row_number, message FROM import_logs WHERE job_id = %s AND level = 'warning' ORDER BY id",
        (job_id,),
    )


def test_append_twice_duplicates_and_upsert_twice_does_not(pipeline: Pipeline) -> None:
    file = users(("u1", "a@x.io"), ("u2", "b@x.io"), ("u3", "c@x.io"), ("u4", "d@x.io"))
    first = pipeline.run("c1", "users", "u.csv", file, {"mode": "upsert"})
    assert first.status == "succeeded", first.error
    assert counts(first) == (4, 0, 0, 0, 0)
    before = table(pipeline, "c1")
    second = pipeline.run("c1", "users", "u.csv", file, {"mode": "upsert"})
    assert second.status == "succeeded", second.error
    assert counts(second) == (0, 0, 4, 0, 0)
    assert table(pipeline, "c1") == before  # nothing written: same ids, job ids, times
    appended = pipeline.run("c1", "users", "u.csv", file)
    assert counts(appended) == (4, 0, 0, 0, 0)
    assert len(table(pipeline, "c1")) == 8


def test_upsert_updates_changed_rows_in_place_and_inserts_new_ones(pipeline: Pipeline) -> None:
    first = pipeline.run("c2", "users", "u.csv", users(("u1", "a@x.io"), ("u2", "b@x.io"), ("u3", "c@x.io")))
    old = {row[1]["external_id"]: row for row in table(pipeline, "c2")}
    change = users(("u2", "b@x.io", "Bea"), ("u1", "a@x.io"), ("u4", "d@x.io"), ("u5", "bad-email"))
    job = pipeline.run("c2", "users", "u.csv", change, {"mode": "upsert"})
    assert job.status == "succeeded", job.error
    assert counts(job) == (1, 1, 1, 0, 0)
    assert (job.rows_valid, job.rows_invalid) == (3, 1)
    assert job.rows_valid == job.rows_inserted + job.rows_updated + job.rows_unchanged + job.rows_duplicate
    rows = {row[1]["external_id"]: row for row in table(pipeline, "c2")}
    assert rows["u2"][0] == old["u2"][0]  # same id
    assert rows["u2"][1] == {"external_id": "u2", "email": "b@x.io", "first_name": "Bea"}
    assert (rows["u2"][2], rows["u2"][3]) == (job.id, 1)
    assert rows["u1"] == old["u1"]  # unchanged: not written at all
    assert rows["u3"] == old["u3"]  # not in the file: upsert leaves it
    assert (rows["u4"][2], rows["u4"][3]) == (job.id, 3)
    tagged = query(pipeline.customer_dsns["c2"], "SELECT count(*) FROM users WHERE job_id = %s", (job.id,))
    assert tagged[0][0] == job.rows_inserted + job.rows_updated
    assert first.status == "succeeded"


def test_a_key_repeated_in_the_file_keeps_the_last_row_and_warns_naming_both_rows(pipeline: Pipeline) -> None:
    file = users(("k1", "a@x.io", "first"), ("k2", "b@x.io"), ("k1", "a@x.io", "second"), ("k1", "a@x.io", "third"))
    job = pipeline.run("c3", "users", "u.csv", file, {"mode": "upsert"})
    assert job.status == "succeeded", job.error
    assert counts(job) == (2, 0, 0, 2, 0)
    assert by_key(pipeline, "c3")["k1"]["first_name"] == "third"
    warnings = warnings_of(pipeline, job.id)
    assert [row for row, _ in warnings] == [1, 3]
    assert all("row 4" in message and "'k1'" in message for _, message in warnings)


def test_upsert_refuses_a_table_that_already_holds_a_key_twice_and_changes_nothing(pipeline: Pipeline) -> None:
    file = users(("d1", "a@x.io"), ("d2", "b@x.io"))
    pipeline.run("c4", "users", "u.csv", file)
    pipeline.run("c4", "users", "u.csv", file)
    before = table(pipeline, "c4")
    job = pipeline.run("c4", "users", "u.csv", users(("d1", "new@x.io"), ("d3", "c@x.io")), {"mode": "upsert"})
    assert job.status == "failed"
    assert "'d1'" in job.error and "more than once" in job.error and "'d2'" not in job.error
    assert table(pipeline, "c4") == before
    leftovers = query(pipeline.customer_dsns["c4"], "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stage_%%'")
    assert leftovers == [(0,)]


def test_replace_leaves_exactly_the_files_rows(pipeline: Pipeline) -> None:
    pipeline.run(
        "c5", "users", "u.csv", users(("r1", "a@x.io"), ("r2", "b@x.io"), ("r3", "c@x.io")), {"mode": "upsert"}
    )
    job = pipeline.run("c5", "users", "u.csv", users(("r2", "b@x.io", "B"), ("r4", "d@x.io")), {"mode": "replace"})
    assert job.status == "succeeded", job.error
    assert counts(job) == (1, 1, 0, 0, 2)
    assert sorted(by_key(pipeline, "c5")) == ["r2", "r4"]


def test_replace_fails_on_an_invalid_row_by_default_and_on_an_empty_file_unless_allowed(pipeline: Pipeline) -> None:
    pipeline.run("c6", "users", "u.csv", users(("e1", "a@x.io")), {"mode": "upsert"})
    bad = pipeline.run("c6", "users", "u.csv", users(("e2", "b@x.io"), ("e3", "nope")), {"mode": "replace"})
    assert bad.status == "failed" and "on_invalid" in bad.error
    skipped = pipeline.run(
        "c6", "users", "u.csv", users(("e2", "b@x.io"), ("e3", "nope")), {"mode": "replace", "on_invalid": "skip"}
    )
    assert skipped.status == "succeeded" and counts(skipped) == (1, 0, 0, 0, 1)
    empty = pipeline.run("c6", "users", "u.csv", HEADER.encode(), {"mode": "replace"})
    assert empty.status == "failed" and "allow_empty" in empty.error
    assert sorted(by_key(pipeline, "c6")) == ["e2"]
    allowed = pipeline.run("c6", "users", "u.csv", HEADER.encode(), {"mode": "replace", "allow_empty": True})
    assert allowed.status == "succeeded" and counts(allowed) == (0, 0, 0, 0, 1)
    assert table(pipeline, "c6") == []


def test_atomic_append_inserts_every_valid_row_in_one_publish(pipeline: Pipeline) -> None:
    file = users(*[(f"a{i}", f"a{i}@x.io") for i in range(10)], ("a1", "a1@x.io"))
    job = pipeline.run("c7", "users", "u.csv", file, {"atomic": True})
    assert job.status == "succeeded", job.error
    assert counts(job) == (11, 0, 0, 0, 0)
    assert len(table(pipeline, "c7")) == 11


def test_undo_of_each_mode_restores_the_exact_rows(pipeline: Pipeline, services: Services) -> None:
    base = pipeline.run("c8", "users", "u.csv", users(("x1", "a@x.io"), ("x2", "b@x.io"), ("x3", "c@x.io")))
    original = table(pipeline, "c8")
    for mode in ("upsert", "replace"):
        job = pipeline.run("c8", "users", "u.csv", users(("x1", "a@x.io", "changed"), ("x9", "z@x.io")), {"mode": mode})
        assert job.status == "succeeded", job.error
        assert table(pipeline, "c8") != original
        undone, complete = control.undo(services, job)
        assert complete and undone.status == "undone" and undone.undone_at is not None
        assert table(pipeline, "c8") == original
        again, complete = control.undo(services, undone)
        assert complete and again.status == "undone" and table(pipeline, "c8") == original
    undone, _ = control.undo(services, base)
    assert undone.status == "undone" and table(pipeline, "c8") == []


def test_undo_is_refused_while_a_later_job_changed_the_same_rows(pipeline: Pipeline, services: Services) -> None:
    first = pipeline.run("c9", "users", "u.csv", users(("y1", "a@x.io"), ("y2", "b@x.io")), {"mode": "upsert"})
    second = pipeline.run("c9", "users", "u.csv", users(("y1", "a@x.io", "later")), {"mode": "upsert"})
    assert counts(second) == (0, 1, 0, 0, 0)
    with pytest.raises(JobConflict) as refused:
        control.undo(services, first)
    assert second.id in str(refused.value)
    assert pipeline.jobs.get(first.id).status == "succeeded"
    control.undo(services, second)
    undone, _ = control.undo(services, first)
    assert undone.status == "undone" and table(pipeline, "c9") == []


def test_undo_refuses_jobs_that_did_not_succeed_or_wrote_nothing_by_design(
    pipeline: Pipeline, services: Services
) -> None:
    failed = pipeline.run("c10", "users", "u.csv", b"email\nx@y.io\n", {"mode": "upsert"})
    assert failed.status == "failed"
    with pytest.raises(JobConflict, match="only a succeeded job"):
        control.undo(services, failed)
    dry = pipeline.run("c10", "users", "u.csv", users(("z1", "a@x.io")), {"mode": "upsert", "dry_run": True})
    assert dry.status == "succeeded" and counts(dry) == (0, 0, 0, 0, 0)
    with pytest.raises(JobConflict, match="dry run"):
        control.undo(services, dry)


def test_cancelling_a_queued_job_ends_it_and_cancelling_again_answers_the_same(
    pipeline: Pipeline, services: Services
) -> None:
    path = pipeline.put("c11", "held.csv", users(("q1", "a@x.io")))
    job = pipeline.enqueue_held("c11", "users", path)
    cancelled, complete = control.cancel(services, job)
    assert complete and cancelled.status == "cancelled" and cancelled.finished_at is not None
    again, complete = control.cancel(services, cancelled)
    assert complete and again.status == "cancelled"
    done = pipeline.run("c11", "users", "u.csv", users(("q2", "b@x.io")))
    with pytest.raises(JobConflict, match="already ended"):
        control.cancel(services, done)
    messages = query(
        pipeline.app_dsn, "SELECT message->>'actor_name' FROM dramatiq.queue WHERE message->'args'->>0 = %s", (job.id,)
    )
    assert messages == [("import_discard",)]  # its fetch message is gone; the cleanup was sent


def test_a_later_job_waits_for_an_earlier_one_and_its_rows_win(pipeline: Pipeline) -> None:
    path = pipeline.put("c12", "early.csv", users(("w1", "early@x.io")))
    early = pipeline.enqueue_held("c12", "users", path)
    late = pipeline.enqueue(
        "c12", "users", pipeline.put("c12", "late.csv", users(("w1", "late@x.io"))), {"mode": "upsert"}
    )
    time.sleep(2)
    assert pipeline.jobs.get(late.id).status == "running"  # waiting for its turn
    pipeline.release()
    assert pipeline.wait(early.id).status == "succeeded"
    assert pipeline.wait(late.id).status == "succeeded"
    rows = table(pipeline, "c12")
    assert len(rows) == 1 and rows[0][1]["email"] == "late@x.io" and rows[0][2] == late.id


def test_undo_of_a_replace_is_refused_while_a_later_job_holds_a_key_it_deleted(
    pipeline: Pipeline, services: Services
) -> None:
    pipeline.run("c14", "users", "u.csv", users(("v1", "a@x.io"), ("v2", "b@x.io")), {"mode": "upsert"})
    replaced = pipeline.run("c14", "users", "u.csv", users(("v1", "a@x.io")), {"mode": "replace"})
    assert replaced.rows_deleted == 1
    later = pipeline.run("c14", "users", "u.csv", users(("v2", "again@x.io")))
    with pytest.raises(JobConflict) as refused:
        control.undo(services, replaced)
    assert later.id in str(refused.value)
    control.undo(services, later)
    control.undo(services, replaced)
    assert by_key(pipeline, "c14")["v2"]["email"] == "b@x.io"


def test_undo_history_past_the_retention_period_is_refused_and_purged(pipeline: Pipeline, services: Services) -> None:
    old = pipeline.run("c11", "users", "u.csv", users(("p1", "a@x.io")), {"mode": "upsert"})
    changed = pipeline.run("c11", "users", "u.csv", users(("p1", "b@x.io")), {"mode": "upsert"})
    dsn = pipeline.customer_dsns["c11"]
    query(
        dsn,
        "UPDATE import_service.publishes SET published_at = now() - interval '31 days' WHERE job_id = %s",
        (changed.id,),
    )
    with pytest.raises(JobConflict, match="undo_retention_days"):
        control.undo(services, changed)
    history = "SELECT count(*) FROM import_service.history WHERE job_id = %s"
    assert query(dsn, history, (changed.id,)) == [(1,)]
    from service.stages.cleanup import purge_history

    purge_history(services)
    assert query(dsn, history, (changed.id,)) == [(0,)]
    with pytest.raises(JobConflict, match="no history"):
        control.undo(services, changed)
    assert old.status == "succeeded"
