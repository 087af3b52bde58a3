"""What a customer sees of its database's failures (SPEC 14): no host, port, user or DSN in a
job's error or log lines, while the worker's own log keeps the driver's words for the operator,
without the password. Real `importctl worker` processes, their log captured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions
import pytest

from service.config import Config, load_customer_map
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages.enqueue import check_request, enqueue
from service.stages.messages import dispatch
from service.storage.jobs import Job, JobStore, migrate
from tests.conftest import Databases, query, wait_finished
from tests.e2e.conftest import free_port
from tests.e2e.test_faults import end, start_supervisor
from tests.integration.conftest import pipeline_env

pytestmark = pytest.mark.slow

SECRET = "pa ss'w0rd"  # with a space and a quote: redact must still hide all of it
GHOST = "ghost_role_q7"
CLOSED_USER = "closed_user_k2"
CLOSED_DB = "closed_db_m4"
USERS = "external_id,email\nu1,a@example.com\nu2,b@example.com\n"
REFUSING_TRIGGER = """
CREATE TABLE users (
    id bigserial PRIMARY KEY, data jsonb NOT NULL, job_id uuid NOT NULL, source_row integer NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(), UNIQUE (job_id, source_row));
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'writes refused for %% on %% at %%:%%',  -- (%% for psycopg2)
        current_user, current_database(), host(inet_server_addr()), inet_server_port();
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION refuse();
"""


@dataclass
class Stand:
    config: Config
    jobs: JobStore
    products: ProductRegistry
    worker_log: Path
    closed_port: int
    server: dict[str, str]  # the real server's host, port, user and the refusing database's name

    def run(self, customer: str) -> Job:
        path = self.config.blob_root / customer / "u.csv"
        path.write_text(USERS)
        body = {"customer_id": customer, "product_type": "users", "blob_uri": blob.uri_for(path)}
        job, _ = enqueue(check_request(body, self.config, self.products), self.jobs)
        return wait_finished(self.jobs, job.id, 60)

    def forbidden(self) -> list[str]:
        """What no customer may read: hosts, ports, users, database names, the password."""
        names = [GHOST, CLOSED_USER, CLOSED_DB, SECRET, "pa ss", str(self.closed_port), "127.0.0.1", "localhost"]
        return names + [self.server["port"], self.server["user"], self.server["dbname"]]


@pytest.fixture(scope="module")
def stand(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    app, refusing = databases.create("app"), databases.create("refusing")
    query(refusing, REFUSING_TRIGGER)
    server = psycopg2.extensions.parse_dsn(refusing)
    host, port = server.get("host", "127.0.0.1"), server.get("port", "5432")
    closed_port = free_port()
    password = "'" + SECRET.replace("'", "\\'") + "'"
    mapping = {
        "closed": f"host=127.0.0.1 port={closed_port} dbname={CLOSED_DB} user={CLOSED_USER} password={password}",
        "ghost": f"host={host} port={port} dbname={server['dbname']} user={GHOST} password={password}",
        "refusing": refusing,
    }
    tmp = tmp_path_factory.mktemp("dberrors")
    for name in mapping:
        (tmp / "blobs" / name).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(mapping))
    migrate(app)
    env = pipeline_env(app, tmp / "customer_map.json", tmp / "blobs", CUSTOMER_DB_RETRY_SECONDS="2")
    config = Config(app_db_dsn=app, blob_root=tmp / "blobs", customers=load_customer_map(tmp / "customer_map.json"))
    jobs = JobStore(app, dispatch=dispatch)
    worker_log = tmp / "worker.log"
    with worker_log.open("wb") as output:
        workers = start_supervisor(env, output=output.fileno())
    try:
        yield Stand(
            config,
            jobs,
            ProductRegistry.load(config.schemas_dir),
            worker_log,
            closed_port,
            {"port": str(port), "user": server.get("user", "postgres"), "dbname": server["dbname"]},
        )
    finally:
        end(workers)
        jobs.close()


def customer_text(stand: Stand, job: Job) -> str:
    """All a customer can read of the job: its error and its log lines."""
    return "\n".join([job.error or "", *(line.message for line in stand.jobs.logs(job.id))])


@pytest.mark.parametrize("customer", ["closed", "ghost"])
def test_an_unreachable_customer_database_is_named_to_the_customer_without_connection_details(
    stand: Stand, customer: str
) -> None:
    job = stand.run(customer)
    assert job.status == "failed"
    assert job.error is not None and job.error.startswith("customer database unreachable (gave up after")
    seen = customer_text(stand, job)
    assert [word for word in stand.forbidden() if word in seen] == []


def test_a_refusal_keeps_the_servers_reason_without_connection_details(stand: Stand) -> None:
    job = stand.run("refusing")
    assert job.status == "failed"
    assert (
        job.error == "customer database refused the import: writes refused for *** on *** at ***:*** (SQLSTATE P0001)"
    )
    seen = customer_text(stand, job)
    assert [word for word in stand.forbidden() if word in seen] == []


def test_the_worker_log_keeps_the_details_for_the_operator_without_the_password(stand: Stand) -> None:
    for customer in ("closed", "ghost", "refusing"):
        assert stand.run(customer).status == "failed"
    text = stand.worker_log.read_text()
    assert f"port {stand.closed_port} failed" in text and f"{CLOSED_DB}" in text
    assert f'role "{GHOST}" does not exist' in text
    assert f"writes refused for {stand.server['user']} on {stand.server['dbname']}" in text
    assert "pa ss" not in text and "w0rd" not in text
