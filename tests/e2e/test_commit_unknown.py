"""An atomic job whose COMMIT outcome is unknown (SPEC 12): a TCP proxy between the workers
and Postgres forwards the publish's COMMIT, swallows the answer and cuts every connection,
then keeps the customer database unreachable for longer than customer_db_retry_seconds. The
job never ends `failed` with its changes in the table: it waits, saying so, and ends by what
the customer database's journal says once it can be read."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2.extensions
import pytest

from service.config import Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import control
from service.stages.enqueue import check_request, enqueue
from service.stages.insert import WAITING
from service.stages.messages import dispatch
from service.stages.services import Services
from service.storage.jobs import JobStore, migrate
from tests.conftest import Databases, query, until, wait_finished
from tests.integration.conftest import pipeline_env, start_workers, stop_workers

pytestmark = pytest.mark.slow

RETRY_SECONDS = 2
DOWN_SECONDS = 3 * RETRY_SECONDS + 2  # the database stays unreachable well past the retry window
JOURNAL_INSERT = b"INSERT INTO import_service.publishes"  # only a publish (or an append's journal) says it
COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # the simple-query message psycopg2 sends to commit


class CommitCutter:
    """A TCP proxy to a Postgres server. Once armed, the first connection that journals a publish
    gets its COMMIT forwarded and the answer swallowed; then every connection is cut and new ones
    are closed at once, until `restore`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()  # the COMMIT went through and the connections were cut
        self.down = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.listener.close()
        self._cut_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()  # as a database that is not there
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, server]
            answered = threading.Event()
            swallow = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, swallow, answered), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, swallow, answered), daemon=True).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, swallow: threading.Event, answered: threading.Event
    ) -> None:
        publishing, tail = False, b""
        while data := _recv(client):
            seen, tail = tail + data, data[-64:]
            publishing = publishing or (self.armed.is_set() and not self.cut.is_set() and JOURNAL_INSERT in seen)
            if publishing and COMMIT in seen:
                swallow.set()  # the server commits; the worker never hears it
                server.sendall(data)
                answered.wait(10)
                self.down.set()
                self.cut.set()
                self._cut_all()
                return
            try:
                server.sendall(data)
            except OSError:
                return

    def _downstream(
        self, server: socket.socket, client: socket.socket, swallow: threading.Event, answered: threading.Event
    ) -> None:
        while data := _recv(server):
            if swallow.is_set():
                answered.set()
                continue
            try:
                client.sendall(data)
            except OSError:
                return

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@dataclass
class Stand:
    direct: str  # the customer database, not through the proxy
    proxy: CommitCutter
    jobs: JobStore
    services: Services
    config: Config

    def enqueue(self, name: str, content: str, mode: str) -> str:
        path = self.config.blob_root / "acme" / name
        path.write_text(content)
        body = {"customer_id": "acme", "product_type": "users", "blob_uri": blob.uri_for(path)}
        body["options"] = {"mode": mode}
        job, _ = enqueue(check_request(body, self.config, self.services.products), self.jobs)
        return job.id

    def names(self) -> dict[str, str]:
        rows = query(self.direct, "SELECT data->>'external_id', data->>'first_name' FROM users")
        return dict(rows)


@pytest.fixture(scope="module")
def stand(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    app, direct = databases.create("app"), databases.create("acme")
    params = psycopg2.extensions.parse_dsn(direct)
    proxy = CommitCutter(params.get("host", "127.0.0.1"), int(params.get("port", 5432)))
    through = psycopg2.extensions.make_dsn(**dict(params, host="127.0.0.1", port=str(proxy.port), sslmode="disable"))
    tmp = tmp_path_factory.mktemp("commit")
    (tmp / "blobs" / "acme").mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps({"acme": through}))
    migrate(app)
    env = pipeline_env(app, tmp / "customer_map.json", tmp / "blobs", CUSTOMER_DB_RETRY_SECONDS=str(RETRY_SECONDS))
    customers = load_customer_map(tmp / "customer_map.json")
    config = Config(app_db_dsn=app, blob_root=(tmp / "blobs").resolve(), customers=customers)
    jobs = JobStore(app, dispatch=dispatch)
    workers = start_workers(env)
    try:
        yield Stand(direct, proxy, jobs, Services(config, jobs, ProductRegistry.load(config.schemas_dir), app), config)
    finally:
        stop_workers(workers)
        proxy.close()
        jobs.close()


def users(first_name: str) -> str:
    return "external_id,email,first_name\n" + "".join(f"u{i},u{i}@example.com,{first_name}\n" for i in range(1, 51))


def test_a_job_whose_commit_outcome_is_unknown_waits_for_the_journal_and_succeeds(stand: Stand) -> None:
    base = wait_finished(stand.jobs, stand.enqueue("base.csv", users("Old"), "upsert"), 60)
    assert base.status == "succeeded", base.error
    stand.proxy.armed.set()
    job_id = stand.enqueue("new.csv", users("New"), "upsert")
    until(stand.proxy.cut.is_set, timeout=60)
    cut_at = time.monotonic()
    # The COMMIT went through: the job's changes and its journal are in the customer database.
    assert set(stand.names().values()) == {"New"}
    assert query(stand.direct, "SELECT count(*) FROM import_service.publishes WHERE job_id = %s", (job_id,)) == [(1,)]
    # Well past the retry window, the job still runs and says why.
    until(lambda: time.monotonic() - cut_at > DOWN_SECONDS, timeout=DOWN_SECONDS + 1)
    job = stand.jobs.get(job_id)
    assert job is not None and job.status == "running" and job.publishing, job
    assert WAITING in [line.message for line in stand.jobs.logs(job_id)]
    stand.proxy.restore()
    job = wait_finished(stand.jobs, job_id, 90)
    assert job.status == "succeeded", job.error
    assert (job.rows_updated, job.rows_inserted) == (50, 0)
    assert [line.message for line in stand.jobs.logs(job_id)].count(WAITING) == 1
    # It can be undone: the table is back as the first job left it.
    undone, complete = control.undo(stand.services, job)
    assert complete and undone.status == "undone"
    assert set(stand.names().values()) == {"Old"}
