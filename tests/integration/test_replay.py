"""Replay (SPEC 14): a finished job's rejects validated again after the schema was fixed,
with the original file gone."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.edges.api import OPERATOR, Access, Api, JobNotFound
from service.errors import JobConflict
from tests.conftest import ROOT, Databases, query
from tests.integration.conftest import Pipeline, make_pipeline


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("schemas")
    for path in (ROOT / "schemas").glob("*.json"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def pipeline(databases: Databases, tmp_path_factory: pytest.TempPathFactory, schemas: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(databases, tmp_path_factory, ["r1", "r2"], schemas_dir=schemas)


def test_a_replay_after_the_schema_was_fixed_writes_the_rows_that_pass_without_the_file(
    pipeline: Pipeline, schemas: Path
) -> None:
    content = (
        b"external_id,email,role\n"
        b"a1,a1@x.io,student\n"
        b"a2,a2@x.io,guest\n"  # not a role yet
        b"a3,broken,guest\n"  # still invalid after the fix
        b"a4,a4@x.io,guest\n"
        b"a5,a5@x.io,teacher\n"
    )
    path = pipeline.put("r1", "roles.csv", content)
    original = pipeline.wait(pipeline.enqueue("r1", "users", path, {"mode": "upsert"}).id)
    assert (original.rows_valid, original.rows_invalid) == (2, 3)
    path.unlink()
    schema = json.loads((schemas / "users.json").read_text())
    schema["properties"]["role"]["enum"].append("guest")
    (schemas / "users.json").write_text(json.dumps(schema))
    pipeline.restart_workers()
    api = Api(pipeline.config, pipeline.jobs, pipeline.products)
    replayed = pipeline.wait(api.replay(OPERATOR, original.id).id)
    assert replayed.status == "succeeded", replayed.error
    assert replayed.options == {"mode": "upsert", "replay_of": original.id}
    assert (replayed.rows_total, replayed.rows_valid, replayed.rows_invalid) == (3, 2, 1)
    assert replayed.rows_inserted == 2
    rows = query(
        pipeline.customer_dsns["r1"],
        "SELECT source_row, data->>'role' FROM users WHERE job_id = %s ORDER BY 1",
        (replayed.id,),
    )
    assert rows == [(2, "guest"), (4, "guest")]  # the original file's row numbers
    (left,) = query(
        pipeline.customer_dsns["r1"], "SELECT source_row FROM import_service.rejects WHERE job_id = %s", (replayed.id,)
    )
    assert left == (3,)  # what still fails is a reject of the replay, replayable in turn


def test_replay_is_refused_for_a_running_job_a_job_without_rejects_and_another_customers_job(
    pipeline: Pipeline,
) -> None:
    api = Api(pipeline.config, pipeline.jobs, pipeline.products)
    clean = pipeline.run("r2", "users", "ok.csv", b"external_id,email\nz1,z1@x.io\n")
    with pytest.raises(JobConflict, match="no rejected rows"):
        api.replay(OPERATOR, clean.id)
    held = pipeline.enqueue_held("r2", "users", pipeline.put("r2", "held.csv", b"external_id,email\nz2,bad\n"))
    with pytest.raises(JobConflict, match="queued"):
        api.replay(OPERATOR, held.id)
    api.cancel(OPERATOR, held.id)  # later jobs of r2's users would wait for it
    with pytest.raises(JobNotFound):
        api.replay(Access(frozenset({"r1"})), clean.id)


def test_a_replay_of_a_replace_job_upserts_and_deletes_nothing(pipeline: Pipeline) -> None:
    api = Api(pipeline.config, pipeline.jobs, pipeline.products)
    pipeline.run("r2", "users", "base.csv", b"external_id,email\nb1,b1@x.io\nb2,b2@x.io\n", {"mode": "upsert"})
    replace = pipeline.run(
        "r2", "users", "rep.csv", b"external_id,email\nb1,b1@x.io\nb3,bad\n", {"mode": "replace", "on_invalid": "skip"}
    )
    assert replace.rows_deleted >= 1
    replayed = pipeline.wait(api.replay(OPERATOR, replace.id).id)
    assert replayed.options["mode"] == "upsert" and replayed.rows_deleted == 0
    assert replayed.status == "succeeded" and replayed.rows_invalid == 1
