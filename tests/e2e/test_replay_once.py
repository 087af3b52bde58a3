"""A job is replayed at most once at a time (SPEC 14): simultaneous POSTs to a real gunicorn
make one replay job, asking again answers 200 with it (REST, gRPC, importctl), and every
fixed reject is written once. After its replay is undone, a job can be replayed again."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from service.generated import importer_pb2, importer_pb2_grpc
from service.stages.messages import dispatch
from service.stages.replay import replay_options
from service.stages.services import REPLAY
from service.storage.jobs import JobStore
from tests.conftest import ROOT, Databases, query
from tests.e2e.conftest import Stack
from tests.e2e.test_cli import IMPORTCTL
from tests.integration.conftest import HELD_QUEUE, Pipeline, make_pipeline

TOKENS = {"tok-r1": ["r1"]}
AUTH = {"Authorization": "Bearer tok-r1"}
REQUESTS_AT_ONCE = 8
# Rows 2 and 4 have a role the schema learns after the first import; row 3 stays invalid.
CONTENT = b"external_id,email,role\na1,a1@x.io,student\na2,a2@x.io,guest\na3,broken,guest\na4,a4@x.io,guest\n"


@dataclass
class Stand:
    pipeline: Pipeline
    base_url: str
    grpc_target: str
    original: str  # an append job whose two rejects pass once the schema knows "guest"

    def post(self, path: str) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(urlsplit(self.base_url).netloc, timeout=60)
        try:
            conn.request("POST", path, headers=AUTH)
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            conn.close()

    def guests(self) -> list[tuple[Any, ...]]:
        """The rows of role guest in the table, with the job that wrote each."""
        return query(
            self.pipeline.customer_dsns["r1"],
            "SELECT data->>'external_id', job_id::text FROM users WHERE data->>'role' = 'guest' ORDER BY 1, 2",
        )

    def replays(self) -> list[str]:
        rows = query(
            self.pipeline.app_dsn,
            "SELECT id::text FROM import_jobs WHERE options->>'replay_of' = %s ORDER BY created_at",
            (self.original,),
        )
        return [row[0] for row in rows]


@pytest.fixture(scope="module")
def stand(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    schemas = tmp_path_factory.mktemp("schemas")
    for path in (ROOT / "schemas").glob("*.json"):
        shutil.copy(path, schemas / path.name)
    for pipeline in make_pipeline(databases, tmp_path_factory, ["r1"], schemas_dir=schemas):
        original = pipeline.run("r1", "users", "roles.csv", CONTENT)
        assert (original.status, original.rows_valid, original.rows_invalid) == ("succeeded", 1, 3), original
        schema = json.loads((schemas / "users.json").read_text())
        schema["properties"]["role"]["enum"].append("guest")
        (schemas / "users.json").write_text(json.dumps(schema))
        pipeline.restart_workers()
        tokens = tmp_path_factory.mktemp("tokens") / "tokens.json"
        tokens.write_text(json.dumps(TOKENS))
        env = dict(pipeline.env, API_TOKENS_PATH=str(tokens))
        servers = Stack(env, pipeline.app_dsn, pipeline.customer_dsns, pipeline.config.blob_root, tokens.parent)
        try:
            _, base_url = servers.gunicorn()
            _, target = servers.grpc_server()
            yield Stand(pipeline, base_url, target, original.id)
        finally:
            for process in servers.processes:
                process.terminate()
                process.wait(timeout=30)


def test_simultaneous_replays_make_one_job_and_asking_again_answers_200_with_it(stand: Stand) -> None:
    answers: list[tuple[int, dict[str, Any]]] = []
    start = threading.Barrier(REQUESTS_AT_ONCE)

    def ask() -> None:
        start.wait()
        answers.append(stand.post(f"/jobs/{stand.original}/replay"))

    threads = [threading.Thread(target=ask) for _ in range(REQUESTS_AT_ONCE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (REQUESTS_AT_ONCE - 1) + [202], answers
    (replay_id,) = {answer["job_id"] for _, answer in answers}
    assert stand.replays() == [replay_id]

    replay = stand.pipeline.wait(replay_id)
    assert (replay.status, replay.rows_inserted) == ("succeeded", 2), replay
    status, again = stand.post(f"/jobs/{stand.original}/replay")
    assert (status, again["job_id"], again["status"]) == (200, replay_id, "succeeded")
    with grpc.insecure_channel(stand.grpc_target) as channel:
        reply = importer_pb2_grpc.ImporterStub(channel).ReplayRejects(
            importer_pb2.GetJobRequest(job_id=stand.original), metadata=[("authorization", "Bearer tok-r1")], timeout=30
        )
    assert reply.job_id == replay_id
    cli = subprocess.run(
        [IMPORTCTL, "replay", stand.original],
        env=stand.pipeline.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (cli.returncode, cli.stdout.strip()) == (0, replay_id), cli.stderr
    assert f"replayed already, by job {replay_id} (succeeded)" in cli.stderr
    assert stand.replays() == [replay_id]
    assert stand.guests() == [("a2", replay_id), ("a4", replay_id)]  # each fixed reject once


def test_after_its_replay_is_undone_a_job_is_replayed_anew(stand: Stand) -> None:
    (previous,) = stand.replays()
    assert stand.post(f"/jobs/{previous}/undo")[0] == 200
    assert stand.guests() == []
    status, answer = stand.post(f"/jobs/{stand.original}/replay")
    assert status == 202 and answer["job_id"] != previous, answer
    assert stand.pipeline.wait(answer["job_id"]).status == "succeeded"
    assert stand.replays() == [previous, answer["job_id"]]
    assert stand.guests() == [("a2", answer["job_id"]), ("a4", answer["job_id"])]


def test_a_queued_replay_answers_200_and_once_cancelled_the_job_is_replayed_anew(stand: Stand) -> None:
    latest = stand.replays()[-1]
    assert stand.post(f"/jobs/{latest}/undo")[0] == 200

    def parked(actor_name: str, args: tuple[Any, ...]) -> tuple[str, str, dict[str, Any]]:
        _, message_id, message = dispatch(actor_name, args)
        return HELD_QUEUE, message_id, dict(message, queue_name=HELD_QUEUE)

    held = JobStore(stand.pipeline.app_dsn, dispatch=parked, maxconn=1)
    try:
        original = stand.pipeline.jobs.get(stand.original)
        assert original is not None
        queued, created = held.create_replay(original, replay_options(original), REPLAY)
    finally:
        held.close()
    assert created and queued.status == "queued"
    status, answer = stand.post(f"/jobs/{stand.original}/replay")
    assert (status, answer["job_id"], answer["status"]) == (200, queued.id, "queued")
    status, answer = stand.post(f"/jobs/{queued.id}/cancel")
    assert (status, answer["status"]) == (200, "cancelled")
    status, answer = stand.post(f"/jobs/{stand.original}/replay")
    assert status == 202 and answer["job_id"] not in stand.replays()[:-1], answer
    assert stand.pipeline.wait(answer["job_id"]).status == "succeeded"
    assert stand.guests() == [("a2", answer["job_id"]), ("a4", answer["job_id"])]
