"""Operating it (SPEC 16), through the real processes: gunicorn's GET /metrics before and after a
known import, metrics_token, the workers' Dramatiq metrics on worker_metrics_addr, and JSON
logs of gunicorn, the gRPC server and `importctl worker` parsed line by line and grepped
for secrets and row content."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from service.generated import importer_pb2_grpc
from service.sources import blob
from service.storage.jobs import migrate
from service.storage.queue import QUEUES, WEBHOOKS_QUEUE, delay_queue
from tests.conftest import ROOT, Databases, query, until
from tests.e2e.conftest import free_port, stop, wait_for_port
from tests.integration.conftest import pipeline_env

TOKEN = "tok-OPS-SECRET-4242"
DSN_PASSWORD = "hunter2-dsn-SECRET"
CELL = "ROWCONTENT-7f3a"
METRICS_TOKEN = "metrics-SECRET-99"
IMPORTCTL = shutil.which("importctl", path=str(Path(sys.executable).parent)) or "importctl"
FINAL = ("succeeded", "failed", "cancelled", "undone")
# Two valid rows, one invalid whose cell holds CELL (it must reach no process log).
USERS = f"external_id,email,age\nop1,a@example.com,30\nop2,{CELL}@@x,31\nop3,c@example.com,\n"


@dataclass
class Ops:
    env: dict[str, str]
    app_dsn: str
    customer_dsn: str
    root: Path
    logs: Path
    rest: str = ""
    grpc: str = ""
    worker_metrics: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.out").open("ab")
        err = (self.logs / f"{name}.err").open("ab")
        process = subprocess.Popen(
            list(command), env=env or self.env, cwd=ROOT, stdout=out, stderr=err, start_new_session=True
        )
        self.processes.append(process)
        return process

    def get(self, url: str, token: str | None = TOKEN) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def enqueue(self, name: str, content: str, **options: Any) -> str:
        path = self.root / "acme" / name
        path.write_text(content)
        body = {"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path), "options": options}
        request = urllib.request.Request(
            f"{self.rest}/enqueue",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
            return str(json.loads(response.read())["job_id"])

    def wait(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, text = self.get(f"{self.rest}/jobs/{job_id}")
            job = json.loads(text)
            if status == 200 and job["status"] in FINAL:
                return dict(job)
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def ops(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    """gunicorn (2 workers), the gRPC server and `importctl worker`, all with LOG_FORMAT=json,
    a customer DSN holding a password and a token file: every process's output in logs/."""
    app = databases.create("app")
    customer = databases.create("acme")
    tmp = tmp_path_factory.mktemp("ops")
    root, logs = tmp / "blobs", tmp / "logs"
    (root / "acme").mkdir(parents=True)
    logs.mkdir()
    # Trust authentication ignores the password, which is only there to be looked for in the logs.
    (tmp / "customer_map.json").write_text(json.dumps({"acme": f"{customer} password={DSN_PASSWORD}"}))
    (tmp / "tokens.json").write_text(json.dumps({TOKEN: ["acme"]}))
    migrate(app)
    metrics_port = free_port()
    env = pipeline_env(
        app,
        tmp / "customer_map.json",
        root,
        API_TOKENS_PATH=str(tmp / "tokens.json"),
        LOG_FORMAT="json",
        WORKER_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
        CHUNK_ROWS="1000",  # a 30,000-row file waits for its turns: one chunk out at a time
        CHUNKS_IN_FLIGHT="1",
    )
    ops = Ops(env, app, customer, root, logs)
    try:
        rest_port, grpc_port = free_port(), free_port()
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        wait_for_port(
            rest_port, ops.start("rest", gunicorn, "-b", f"127.0.0.1:{rest_port}", "-w", "2", "service.rest:app")
        )
        grpc_env = dict(env, GRPC_ADDR=f"127.0.0.1:{grpc_port}")
        wait_for_port(grpc_port, ops.start("grpc", sys.executable, "-m", "service.grpc_server", env=grpc_env))
        worker = ops.start("worker", IMPORTCTL, "worker", "--processes", "1", "--threads", "2")
        wait_for_port(metrics_port, worker)
        ops.rest, ops.grpc, ops.worker_metrics = (
            f"http://127.0.0.1:{rest_port}",
            f"127.0.0.1:{grpc_port}",
            f"http://127.0.0.1:{metrics_port}",
        )
        yield ops
    finally:
        for process in ops.processes:
            stop(process)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_known_import_http_requests_and_the_queues(ops: Ops) -> None:
    status, text = ops.get(f"{ops.rest}/metrics", token=None)
    assert status == 200
    before = samples(text)
    assert value(before, "import_app_db_up") == 1.0

    job_id = ops.enqueue("metrics.csv", USERS)
    job = ops.wait(job_id)
    assert job["status"] == "succeeded" and (job["rows_inserted"], job["rows_invalid"]) == (2, 1)
    failed = ops.wait(ops.enqueue("broken.csv", "external_id,name\nz1,x\n"))
    assert failed["status"] == "failed"

    status, text = ops.get(f"{ops.rest}/metrics", token=None)
    after = samples(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("import_jobs_finished_total", product="users", status="succeeded") == 1
    assert delta("import_jobs_finished_total", product="users", status="failed") == 1
    assert delta("import_rows_total", product="users", outcome="inserted") == 2
    assert delta("import_rows_total", product="users", outcome="valid") == 2
    assert delta("import_rows_total", product="users", outcome="invalid") == 1
    assert delta("import_job_duration_seconds_count", product="users", status="succeeded") == 1
    assert delta("import_job_duration_seconds_bucket", product="users", status="succeeded", le="+Inf") == 1
    assert delta("import_job_duration_seconds_sum", product="users", status="succeeded") > 0
    # Both enqueues (202) and the polling (200) were counted, whichever gunicorn worker answered.
    assert delta("import_http_requests_total", route="/enqueue", method="POST", status="202") == 2
    assert delta("import_http_requests_total", route="/jobs/{job_id}", method="GET", status="200") >= 2
    assert delta("import_http_request_duration_seconds_count", route="/enqueue", method="POST") == 2
    # The queues: nothing waits once the jobs are done; the gauges are there and sane.
    assert value(after, "import_jobs_unfinished", product="users", status="running") == 0
    assert value(after, "import_chunks_waiting", product="users") == 0
    queued = [
        v for (name, labels), v in after.items() if name == "import_queue_messages" and ("state", "queued") in labels
    ]
    assert all(v >= 0 for v in queued)


def test_every_queue_has_a_depth_and_an_age_sample_even_when_empty(ops: Ops) -> None:
    status, text = ops.get(f"{ops.rest}/metrics", token=None)
    page = samples(text)
    assert status == 200 and value(page, "import_app_db_up") == 1.0
    for queue in (q for name in QUEUES for q in (name, delay_queue(name))):
        for state in ("queued", "consumed"):
            assert ("import_queue_messages", (("queue", queue), ("state", state))) in page, (queue, state)
        assert ("import_queue_oldest_message_age_seconds", (("queue", queue),)) in page, queue
    # nothing ever went through the webhooks queue here: its samples are 0, not missing
    assert value(page, "import_queue_messages", queue=WEBHOOKS_QUEUE, state="queued") == 0


def test_a_big_files_chunks_waiting_for_their_turn_are_the_backlog_gauge(ops: Ops) -> None:
    rows = "".join(f"w{i},w{i}@example.com,{20 + i % 50}\n" for i in range(30_000))
    job_id = ops.enqueue("waiting.csv", "external_id,email,age\n" + rows)
    seen = []
    while not seen or seen[-1][0] not in FINAL:
        status = json.loads(ops.get(f"{ops.rest}/jobs/{job_id}")[1])["status"]
        page = samples(ops.get(f"{ops.rest}/metrics", token=None)[1])
        seen.append((status, value(page, "import_chunks_waiting", product="users")))
    assert max(waiting for _, waiting in seen) >= 5, seen  # 30 chunks, one out at a time
    assert seen[-1] == ("succeeded", 0), seen
    assert value(page, "import_jobs_unfinished", product="users", status="running") == 0


def test_an_unknown_path_counts_as_unmatched_not_by_its_path(ops: Ops) -> None:
    ops.get(f"{ops.rest}/no/such/path/unique-7c1e")
    _, text = ops.get(f"{ops.rest}/metrics", token=None)
    assert "unique-7c1e" not in text
    assert value(samples(text), "import_http_requests_total", route="unmatched", method="GET", status="404") >= 1


def test_metrics_token_guards_the_metrics_and_api_tokens_do_not_open_them(ops: Ops) -> None:
    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = dict(ops.env, METRICS_TOKEN=METRICS_TOKEN)
    process = ops.start("rest-guarded", gunicorn, "-b", f"127.0.0.1:{port}", "service.rest:app", env=env)
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}/metrics"
        for token in (None, TOKEN, METRICS_TOKEN + "x"):
            status, text = ops.get(url, token=token)
            assert status == 401, token
            assert json.loads(text)["error"]["message"] == "GET /metrics needs Authorization: Bearer <metrics_token>"
        status, text = ops.get(url, token=METRICS_TOKEN)
        assert status == 200 and "import_app_db_up 1.0" in text
    finally:
        stop(process)


def test_the_workers_serve_dramatiqs_metrics_on_worker_metrics_addr(ops: Ops) -> None:
    ops.wait(ops.enqueue("worker-metrics.csv", USERS))
    deadline = time.monotonic() + 10
    while True:
        status, text = ops.get(f"{ops.worker_metrics}/metrics", token=None)
        page = samples(text)
        fetched = value(page, "dramatiq_messages_total", queue_name="imports", actor_name="import_fetch")
        if fetched >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and fetched >= 1
    assert value(page, "dramatiq_messages_total", queue_name="import_chunks", actor_name="import_validate") >= 1
    assert (
        "dramatiq_message_duration_milliseconds_count",
        (("actor_name", "import_fetch"), ("queue_name", "imports")),
    ) in page


def test_a_worker_pool_whose_metrics_port_is_taken_says_so_and_works_on(ops: Ops) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        env = dict(ops.env, WORKER_METRICS_ADDR=addr)
        pool = ops.start("busy-port", IMPORTCTL, "worker", "--processes", "1", "--threads", "1", env=env)
        try:
            log = ops.logs / "busy-port.err"
            until(lambda: f"worker metrics: cannot serve on {addr}" in log.read_text(), timeout=30)
            assert ops.wait(ops.enqueue("busy-port.csv", USERS))["status"] == "succeeded"
            assert pool.poll() is None  # the pool runs on without its metrics server
        finally:
            stop(pool)


def test_json_logs_carry_the_job_and_hold_no_secret_or_row_content(ops: Ops) -> None:
    job_id = ops.enqueue("logs.csv", USERS)
    assert ops.wait(job_id)["status"] == "succeeded"
    with grpc.insecure_channel(ops.grpc) as channel:  # a gRPC call with a bad token, and a good one
        stub = importer_pb2_grpc.ImporterStub(channel)
        request = struct_pb2.Struct()
        request.update({"customer_id": "acme", "product_type": "users", "blob_uri": "file:///nowhere.csv"})
        for token in ("wrong-token", TOKEN):
            with pytest.raises(grpc.RpcError):
                stub.Enqueue(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
    ops.get(f"{ops.rest}/jobs", token="another-wrong-token")
    time.sleep(1.5)  # let the last lines reach the files

    lines: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(ops.logs.iterdir()):
        text = path.read_text()
        for secret in (TOKEN, DSN_PASSWORD, CELL, METRICS_TOKEN, "wrong-token"):
            assert secret not in text, (path.name, secret)
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"{path.name} line {number} is not JSON: {line[:200]!r}") from None
            assert {"time", "level", "message"} <= set(entry), (path.name, line)
            lines.setdefault(path.stem, []).append(entry)
    assert lines.get("rest") and lines.get("grpc") and lines.get("worker"), sorted(lines)
    access = [e for e in lines["rest"] if e.get("logger") == "gunicorn.access"]
    assert any(e["method"] == "POST" and e["path"] == "/enqueue" and e["status"] == 202 for e in access)
    about_jobs = [
        e for entries in lines.values() for e in entries if "job_id" in e and e["logger"] != "gunicorn.access"
    ]
    assert about_jobs and all(e.get("customer_id") == "acme" and e.get("stage") for e in about_jobs)
    stages = {e["stage"] for e in about_jobs if e["job_id"] == job_id}
    assert {"fetch", "insert"} <= stages and any(stage.startswith("validate[") for stage in stages), stages
    # dramatiq's own master lines (booting, ...) are wrapped as JSON too
    assert any(e.get("logger") == "dramatiq.MainProcess" and "booting up" in e["message"] for e in lines["worker"])
    assert query(ops.customer_dsn, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(2,)]


def test_the_access_line_of_every_request_about_a_job_names_the_job_and_its_customer(ops: Ops) -> None:
    job_id = ops.enqueue("access.csv", USERS)
    assert ops.wait(job_id)["status"] == "succeeded"
    paths = [f"/jobs/{job_id}", f"/jobs/{job_id}/logs", f"/jobs/{job_id}/rejects", f"/jobs/{job_id}/rejects.csv"]
    for path in paths:
        assert ops.get(f"{ops.rest}{path}")[0] == 200, path
    for action in ("replay", "undo", "cancel"):  # cancel of a finished job: 409, still about the job
        request = urllib.request.Request(
            f"{ops.rest}/jobs/{job_id}/{action}", data=b"{}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 409, (action, exc.code)
    unknown = "00000000-0000-0000-0000-000000000000"
    assert ops.get(f"{ops.rest}/jobs/{unknown}")[0] == 404
    assert ops.get(f"{ops.rest}/jobs?customer_id=acme")[0] == 200
    deadline = time.monotonic() + 10
    while True:
        access = [
            json.loads(line) for line in (ops.logs / "rest.out").read_text().splitlines() if '"gunicorn.access"' in line
        ]
        mine = {(e["method"], e["path"]): e for e in access if job_id in e["path"] or unknown in e["path"]}
        if len(mine) >= len(paths) + 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for path in [*paths, *(f"/jobs/{job_id}/{action}" for action in ("replay", "undo", "cancel"))]:
        method = "GET" if path in paths else "POST"
        entry = mine[(method, path)]
        assert (entry.get("job_id"), entry.get("customer_id")) == (job_id, "acme"), entry
    assert "job_id" not in mine[("GET", f"/jobs/{unknown}")]  # a job nobody may see is about no job
    listing = [e for e in access if e["path"] == "/jobs" and e["method"] == "GET"]
    assert listing and all("job_id" not in e for e in listing)
    enqueued = [e for e in access if e["path"] == "/enqueue" and e["status"] == 202]
    assert enqueued and all(e.get("customer_id") == "acme" and e.get("job_id") for e in enqueued)
