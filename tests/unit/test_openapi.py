"""The OpenAPI document tells the truth about the falcon app: routes, methods, schemas, errors.

The app runs in process here (falcon's test client, no database): the routes it registers are
walked, and the answers that need a broken database or a bug (500, 503), or that the core decides
on its own (the 202 of a cancel or undo a worker completes), are checked against the document,
as are replay's answers (202, 404, 409, 503). A feed's documented definition and view are held
against the checker that refuses definitions and the function that makes views.
tests/e2e/test_rest.py checks every other answer of a real gunicorn.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import psycopg2
import pytest
from jsonschema import Draft202012Validator

from service.config import Config
from service.edges.api import OPERATOR, Access, Api, JobNotFound
from service.edges.rest.app import create_app
from service.edges.rest.openapi import document
from service.edges.wiring import Edge
from service.errors import CustomerDBUnavailable, JobConflict, RequestRefused
from service.schema.products import ProductRegistry
from service.stages.enqueue import check_options
from service.stages.feeds import (
    FIELDS,
    MAX_EVERY_SECONDS,
    MAX_EXPECT_HOURS,
    MAX_PATTERN_CHARS,
    MIN_EVERY_SECONDS,
    check_feed,
)
from service.storage.feeds import Feed, FeedFile
from service.storage.jobs import Job, JobStore
from service.storage.views import feed_view

TOKEN = "tok-unit-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "hunter2-unit"
JOB_ID = "6f1c0c9e-4a57-4d7e-9f55-1d5c2f1a0b11"


class BuggyApi(Api):
    """An Api whose log reads hit a bug that mentions a DSN password."""

    def logs(self, access: Access, job_id: str) -> Any:
        raise RuntimeError(f"boom while reading postgresql://importer:{PASSWORD}@db/app for {job_id}")


# Job ids that tell ScriptedApi how to answer a cancel, an undo or a replay (REPLAYED: the new job).
COMPLETE, PENDING, CONFLICT, REPLAYED = (f"6f1c0c9e-4a57-4d7e-9f55-1d5c2f1a0b{n}" for n in (21, 22, 23, 24))
AFTER = {"cancel": ("cancelled", "running"), "undo": ("undone", "succeeded")}


class ScriptedApi(Api):
    """An Api whose cancel and undo answer by the job id, without a database."""

    def cancel(self, access: Access, job_id: str) -> tuple[Job, bool]:
        return self._answer("cancel", job_id)

    def undo(self, access: Access, job_id: str) -> tuple[Job, bool]:
        return self._answer("undo", job_id)

    def replay(self, access: Access, job_id: str) -> Job:
        if job_id == CONFLICT:
            raise JobConflict(f"job {job_id} has no rejected rows to replay")
        if job_id != COMPLETE:
            raise JobNotFound(f"no job {job_id}")
        return a_job(REPLAYED, "queued")

    def replay_job(self, access: Access, job_id: str) -> tuple[Job, bool]:
        if job_id == PENDING:  # replayed before: its replay is still running
            return a_job(REPLAYED, "running"), False
        return self.replay(access, job_id), True

    def _answer(self, action: str, job_id: str) -> tuple[Job, bool]:
        if job_id == CONFLICT:
            raise JobConflict(f"cannot {action} job {job_id}: it failed")
        if job_id not in (COMPLETE, PENDING):
            raise JobNotFound(f"no job {job_id}")
        done, ongoing = AFTER[action]
        status = done if job_id == COMPLETE else ongoing
        return a_job(job_id, status, undone=(action, job_id) == ("undo", COMPLETE)), job_id == COMPLETE


def a_job(job_id: str, status: str, undone: bool = False) -> Job:
    """An acme users upsert job in this status, as the job store would return it."""
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    row: dict[str, Any] = {
        "id": job_id,
        "customer_id": "acme",
        "product_type": "users",
        "blob_uri": "file:///b/acme/u.csv",
        "options": {"mode": "upsert"},
        "status": status,
        **dict.fromkeys(("rows_total", "rows_valid", "rows_inserted", "rows_updated"), 2),
        **dict.fromkeys(("rows_invalid", "rows_unchanged", "rows_duplicate", "rows_deleted", "chunks_done"), 0),
        **dict.fromkeys(("error", "plan", "chunks_total", "idempotency_key"), None),
        **dict.fromkeys(("created_at", "started_at", "finished_at", "updated_at"), now),
        "logged_errors": 0,
        "undone_at": now if undone else None,
    }
    return Job.from_row(row)


class UnreachableCustomerApi(ScriptedApi):
    """An Api whose jobs exist but whose customer database cannot be reached for their rejects."""

    def job(self, access: Access, job_id: str) -> Job:
        return a_job(job_id, "succeeded")

    def rejects_page(self, access: Access, job_id: str, after: Any = None, limit: Any = None) -> Any:
        raise self._unreachable()

    def rejects_csv(self, access: Access, job_id: str) -> Iterator[bytes]:
        def pieces() -> Iterator[bytes]:  # like the real one: nothing is read before the first piece
            raise self._unreachable()
            yield b""

        return pieces()

    def replay(self, access: Access, job_id: str) -> Job:
        raise self._unreachable()  # the real one asks the customer database whether it holds rejects

    def _unreachable(self) -> CustomerDBUnavailable:
        return CustomerDBUnavailable(f"customer database postgresql://importer:{PASSWORD}@db/acme is unreachable")


@pytest.fixture(scope="module")
def scripted() -> falcon.testing.TestClient:
    """The app over ScriptedApi (its app DB is never reached)."""
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=app connect_timeout=2"
    config = Config(app_db_dsn=dsn, tokens={TOKEN: ("*",)})
    api = ScriptedApi(config, JobStore(dsn, maxconn=1), ProductRegistry.load(config.schemas_dir))
    return falcon.testing.TestClient(create_app(Edge(config, dsn, api)))


@pytest.fixture(scope="module")
def unreachable_customer() -> falcon.testing.TestClient:
    """The app over UnreachableCustomerApi (no database is reached)."""
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=app connect_timeout=2"
    config = Config(app_db_dsn=dsn, tokens={TOKEN: ("*",)})
    api = UnreachableCustomerApi(config, JobStore(dsn, maxconn=1), ProductRegistry.load(config.schemas_dir))
    return falcon.testing.TestClient(create_app(Edge(config, dsn, api)))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def client() -> falcon.testing.TestClient:
    """The app over an app DB nobody listens for: every database read fails to connect."""
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=app user=importer password={PASSWORD} connect_timeout=2"
    config = Config(app_db_dsn=dsn, tokens={TOKEN: ("*",)})
    api = BuggyApi(config, JobStore(dsn, maxconn=2), ProductRegistry.load(config.schemas_dir))
    return falcon.testing.TestClient(create_app(Edge(config, dsn, api)))


def _routes(app: falcon.App) -> Iterator[tuple[str, set[str]]]:
    """(template, methods its resource implements) for every route the app registered."""
    nodes = list(app._router._roots)  # falcon keeps no public list of routes
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if node.resource is not None:
            methods = {
                m for m, responder in node.method_map.items() if getattr(responder, "__self__", None) is node.resource
            }
            yield node.uri_template, methods


def _validate(schema: dict[str, Any], instance: Any) -> None:
    """Validate against a schema of the document, its $refs resolved within the document."""
    rooted = {**schema, "components": document()["components"]}
    Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(instance)


def _check(result: falcon.testing.Result, path: str, method: str = "get") -> None:
    """The answer's status is documented for the operation and its body fits the schema."""
    responses = document()["paths"][path][method]["responses"]
    assert str(result.status_code) in responses, result.status_code
    _validate(responses[str(result.status_code)]["content"]["application/json"]["schema"], result.json)


def test_every_route_of_the_app_is_documented_with_the_same_methods(client: falcon.testing.TestClient) -> None:
    registered = {template: methods for template, methods in _routes(client.app)}
    documented = {path: {m.upper() for m in operations} for path, operations in document()["paths"].items()}
    assert registered == documented
    assert len(registered) == 23


def test_every_component_schema_is_valid_and_every_ref_resolves() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rpartition("/")[2] in doc["components"]["schemas"]


def test_every_error_answer_uses_the_error_schema_and_every_guarded_route_documents_401() -> None:
    doc = document()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            public = operation.get("security") == []
            tus_options = method == "options" and path.startswith("/uploads")  # a browser's preflight has no token
            assert public == (
                path in ("/healthz", "/readyz", "/openapi.json", "/ui", "/ui/tus.min.js", "/metrics") or tus_options
            ), path
            # /metrics is public unless metrics_token is set
            assert ("401" in operation["responses"]) != public or path == "/metrics", (path, method)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


@pytest.mark.parametrize(
    "options",
    [
        {"colour": "red"},
        {"format": "parquet"},
        {"dry_run": "yes"},
        {"delimiter": ";;"},
        {"delimiter": ""},
        {"on_invalid": "ignore"},
        {"sheet": ""},
        {"encoding": 8},
        {"mode": "merge"},
        {"mode": "upsert", "atomic": False},
        {"mode": "replace", "atomic": False},
        {"allow_empty": True},
        {"mode": "upsert", "allow_empty": False},
        {"atomic": "yes"},
        {"mode": "replace", "allow_empty": 1},
        "fast",
    ],
)
def test_options_the_document_forbids_are_refused_by_the_request_checker(options: Any) -> None:
    schema = {"$ref": "#/components/schemas/Options"}
    assert not Draft202012Validator({**schema, "components": document()["components"]}).is_valid(options)
    with pytest.raises(RequestRefused, match="option"):
        check_options(options)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"format": "tsv", "delimiter": "\t", "encoding": "latin-1", "on_invalid": "fail", "dry_run": True},
        {"sheet": "S"},
        {"mode": "append", "atomic": False},
        {"atomic": True},
        {"mode": "upsert", "atomic": True},
        {"mode": "replace", "allow_empty": True, "on_invalid": "skip"},
    ],
)
def test_options_the_checker_accepts_fit_the_document(options: dict[str, Any]) -> None:
    _validate({"$ref": "#/components/schemas/Options"}, check_options(options))


def test_a_bug_answers_500_in_the_documented_shape_and_the_log_names_the_job_without_secrets(
    client: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="service.edges.rest.app"):
        result = client.simulate_get(f"/jobs/{JOB_ID}/logs", headers=AUTH)
    assert result.status_code == 500
    assert result.json == {"error": {"status": 500, "message": "internal error", "field": None}}
    _check(result, "/jobs/{job_id}/logs")
    assert JOB_ID in caplog.text and "boom" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in result.text and TOKEN not in caplog.text


def test_an_unreachable_app_database_answers_503_on_readyz_and_reads_while_healthz_stays_200(
    client: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.edges.rest.app"):
        ready = client.simulate_get("/readyz")
        listed = client.simulate_get("/jobs", headers=AUTH)
        job = client.simulate_get(f"/jobs/{JOB_ID}", headers=AUTH)
        page = client.simulate_get(f"/jobs/{JOB_ID}/rejects", headers=AUTH)
        download = client.simulate_get(f"/jobs/{JOB_ID}/rejects.csv", headers=AUTH)
    for result, path in (
        (ready, "/readyz"),
        (listed, "/jobs"),
        (job, "/jobs/{job_id}"),
        (page, "/jobs/{job_id}/rejects"),
        (download, "/jobs/{job_id}/rejects.csv"),
    ):
        assert result.status_code == 503, result.text
        _check(result, path)
        assert PASSWORD not in result.text
    assert "unavailable" in caplog.text and PASSWORD not in caplog.text
    healthz = client.simulate_get("/healthz")
    assert (healthz.status_code, healthz.json) == (200, {"status": "ok"})


def test_the_enqueue_request_schema_closes_the_body_like_the_checker() -> None:
    schema = {"$ref": "#/components/schemas/EnqueueRequest"}
    good = {"customer_id": "acme", "product_type": "users", "blob_uri": "file:///b/acme/u.csv"}
    _validate(schema, good)
    for bad in ({**good, "colour": "red"}, {k: v for k, v in good.items() if k != "blob_uri"}, {**good, "options": []}):
        assert not Draft202012Validator({**schema, "components": document()["components"]}).is_valid(bad)


@pytest.mark.parametrize("action", ["cancel", "undo"])
def test_a_complete_change_answers_200_and_one_a_worker_completes_202_with_location(
    scripted: falcon.testing.TestClient, action: str
) -> None:
    path = f"/jobs/{{job_id}}/{action}"
    done = scripted.simulate_post(f"/jobs/{COMPLETE}/{action}", headers=AUTH)
    assert (done.status_code, done.json["status"]) == (200, AFTER[action][0])
    _check(done, path, "post")
    pending = scripted.simulate_post(f"/jobs/{PENDING}/{action}", headers=AUTH)
    assert (pending.status_code, pending.json["status"]) == (202, AFTER[action][1])
    _check(pending, path, "post")
    assert pending.headers["location"] == f"/jobs/{PENDING}"


@pytest.mark.parametrize("action", ["cancel", "undo"])
def test_cancel_and_undo_ignore_any_body(scripted: falcon.testing.TestClient, action: str) -> None:
    for body, content_type in (("{}", "application/json"), ("not json", "text/plain"), ("x" * 70_000, None)):
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
        result = scripted.simulate_post(f"/jobs/{COMPLETE}/{action}", body=body, headers=headers)
        assert result.status_code == 200, result.text


@pytest.mark.parametrize("action", ["cancel", "undo"])
def test_a_job_state_conflict_answers_409_and_a_hidden_job_404_in_the_error_shape(
    scripted: falcon.testing.TestClient, action: str
) -> None:
    conflict = scripted.simulate_post(f"/jobs/{CONFLICT}/{action}", headers=AUTH)
    assert conflict.json == {
        "error": {"status": 409, "message": f"cannot {action} job {CONFLICT}: it failed", "field": None}
    }
    _check(conflict, f"/jobs/{{job_id}}/{action}", "post")
    hidden = scripted.simulate_post(f"/jobs/{JOB_ID}/{action}", headers=AUTH)
    assert hidden.status_code == 404
    _check(hidden, f"/jobs/{{job_id}}/{action}", "post")


def test_cancel_undo_and_replay_answer_503_while_the_app_database_is_unreachable(
    client: falcon.testing.TestClient,
) -> None:
    for action in ("cancel", "undo", "replay"):
        result = client.simulate_post(f"/jobs/{JOB_ID}/{action}", headers=AUTH)
        assert result.status_code == 503, result.text
        _check(result, f"/jobs/{{job_id}}/{action}", "post")


@pytest.mark.parametrize("path", ["/jobs/{job_id}/rejects", "/jobs/{job_id}/rejects.csv"])
def test_an_unreachable_customer_database_answers_503_to_rejects_and_the_log_names_the_job_without_secrets(
    unreachable_customer: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.edges.rest.app"):
        result = unreachable_customer.simulate_get(path.format(job_id=JOB_ID), headers=AUTH)
    assert result.status_code == 503, result.text
    assert result.json == {
        "error": {"status": 503, "message": "the customer database is unavailable; try again shortly", "field": None}
    }
    _check(result, path)
    assert JOB_ID in caplog.text and "unreachable" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in result.text


def test_a_replay_answers_202_with_the_new_job_and_where_to_follow_it_whatever_the_body(
    scripted: falcon.testing.TestClient,
) -> None:
    for body, content_type in (
        (None, None),
        ("{}", "application/json"),
        ("not json", "text/plain"),
        ("x" * 70_000, None),
    ):
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
        result = scripted.simulate_post(f"/jobs/{COMPLETE}/replay", body=body, headers=headers)
        assert (result.status_code, result.json) == (202, {"job_id": REPLAYED, "status": "queued"}), result.text
        assert result.headers["location"] == f"/jobs/{REPLAYED}"
        _check(result, "/jobs/{job_id}/replay", "post")


def test_a_replay_asked_again_answers_200_with_the_replay_job_it_made_before(
    scripted: falcon.testing.TestClient,
) -> None:
    again = scripted.simulate_post(f"/jobs/{PENDING}/replay", headers=AUTH)
    assert (again.status_code, again.json["job_id"], again.json["status"]) == (200, REPLAYED, "running")
    _check(again, "/jobs/{job_id}/replay", "post")


def test_a_replay_the_job_refuses_answers_409_and_a_hidden_job_404_in_the_error_shape(
    scripted: falcon.testing.TestClient,
) -> None:
    conflict = scripted.simulate_post(f"/jobs/{CONFLICT}/replay", headers=AUTH)
    assert conflict.json == {
        "error": {"status": 409, "message": f"job {CONFLICT} has no rejected rows to replay", "field": None}
    }
    _check(conflict, "/jobs/{job_id}/replay", "post")
    hidden = scripted.simulate_post(f"/jobs/{JOB_ID}/replay", headers=AUTH)
    assert hidden.json == {"error": {"status": 404, "message": f"no job {JOB_ID}", "field": None}}
    _check(hidden, "/jobs/{job_id}/replay", "post")


def test_a_replay_answers_503_while_the_customer_database_is_unreachable_and_keeps_its_name_in_the_log(
    unreachable_customer: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.edges.rest.app"):
        result = unreachable_customer.simulate_post(f"/jobs/{JOB_ID}/replay", headers=AUTH)
    assert result.json == {
        "error": {"status": 503, "message": "the customer database is unavailable; try again shortly", "field": None}
    }
    _check(result, "/jobs/{job_id}/replay", "post")
    assert JOB_ID in caplog.text and "unreachable" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in result.text


def test_an_unreachable_s3_endpoint_answers_503_at_enqueue_naming_the_endpoint_not_the_credentials(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service.config import CustomerSettings, S3Area

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-UNIT-ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-secret-key-42")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=app user=importer password={PASSWORD} connect_timeout=2"
    config = Config(
        app_db_dsn=dsn,
        tokens={TOKEN: ("*",)},
        customers={"s3c": "dbname=s3c"},
        customer_settings={"s3c": CustomerSettings(s3=S3Area("imports-bucket", "customers", endpoint, "us-east-1"))},
    )
    api = Api(config, JobStore(dsn, maxconn=1), ProductRegistry.load(config.schemas_dir))
    client = falcon.testing.TestClient(create_app(Edge(config, dsn, api)))
    body = {"customer_id": "s3c", "product_type": "users", "blob_uri": "s3://imports-bucket/customers/s3c/u.csv"}
    with caplog.at_level(logging.WARNING, logger="service.edges.rest.app"):
        result = client.simulate_post("/enqueue", json=body, headers=AUTH)
    assert result.status_code == 503, result.text
    message = result.json["error"]["message"]
    assert endpoint in message and message.endswith("try again shortly"), message
    assert "customer database" not in message
    _check(result, "/enqueue", "post")
    for text in (result.text, caplog.text):
        assert "unit-secret-key-42" not in text and "AKIA-UNIT-ID" not in text


# -- feeds (SPEC 20) ----------------------------------------------------------------------------


def _feed_api(blob_root: Path) -> tuple[Api, falcon.testing.TestClient]:
    """An Api with customer acme in this blob root over an app DB nobody listens for, and its app."""
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=app user=importer password={PASSWORD} connect_timeout=2"
    config = Config(app_db_dsn=dsn, tokens={TOKEN: ("*",)}, customers={"acme": "dbname=acme"}, blob_root=blob_root)
    api = Api(config, JobStore(dsn, maxconn=1), ProductRegistry.load(config.schemas_dir))
    return api, falcon.testing.TestClient(create_app(Edge(config, dsn, api)))


def _feed_body(blob_root: Path, **changes: Any) -> dict[str, Any]:
    prefix = (blob_root / "acme" / "incoming").as_uri() + "/"
    body = {"customer_id": "acme", "product_type": "users", "prefix_uri": prefix, "schedule": {"every_seconds": 60}}
    return {name: value for name, value in {**body, **changes}.items() if value is not None}


def _fits(name: str, instance: Any) -> bool:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document()["components"]}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).is_valid(instance)


def _accepted(api: Api, body: dict[str, Any]) -> bool:
    """Whether the Api takes this feed definition: past its checks it asks the app DB, unreachable here."""
    try:
        api.create_feed(Access(frozenset({"acme"})), body)
    except RequestRefused:
        return False
    except psycopg2.OperationalError:
        return True
    raise AssertionError("the unreachable app DB answered")


def test_a_feed_definition_needs_the_fields_the_document_requires_and_only_those(tmp_path: Path) -> None:
    api, _ = _feed_api(tmp_path)
    request = document()["components"]["schemas"]["FeedRequest"]
    assert set(request["properties"]) == set(FIELDS)
    for name in FIELDS:
        body = _feed_body(tmp_path, **{name: None})
        assert _fits("FeedRequest", body) == (name not in request["required"]) == _accepted(api, body), name


def test_a_feed_change_holds_every_field_of_a_definition_but_those_the_checker_will_not_change(
    tmp_path: Path,
) -> None:
    api, _ = _feed_api(tmp_path)
    body = _feed_body(tmp_path, pattern="*.csv", options={}, after_success="keep", expect_every_hours=1, paused=False)
    assert set(body) == set(FIELDS)
    for name, value in body.items():
        changeable = name in document()["components"]["schemas"]["FeedChange"]["properties"]
        assert _fits("FeedChange", {name: value}) == changeable, name
        try:
            check_feed({name: value}, api.config, api.products, creating=False)
        except RequestRefused as refused:
            assert not changeable and refused.field == name and "cannot change" in str(refused), name
        else:
            assert changeable, name


@pytest.mark.parametrize(
    "changes",
    [
        {"colour": "red"},
        {"product_type": None},
        {"schedule": None},
        {"prefix_uri": "https://files.example.com/acme/"},
        {"schedule": {"every_seconds": MIN_EVERY_SECONDS - 1}},
        {"schedule": {"every_seconds": MAX_EVERY_SECONDS + 1}},
        {"schedule": {"every_seconds": True}},
        {"schedule": {"every_seconds": 60, "cron": "0 2 * * *"}},
        {"schedule": {"cron": "every night"}},
        {"schedule": "hourly"},
        {"pattern": ""},
        {"pattern": "x" * (MAX_PATTERN_CHARS + 1)},
        {"expect_every_hours": 0},
        {"expect_every_hours": MAX_EXPECT_HOURS + 1},
        {"expect_every_hours": "12"},
        {"paused": "yes"},
        {"after_success": "archive"},
        {"after_success": {"move_to": "file:///elsewhere/", "also": 1}},
        {"options": {"mode": "merge"}},
        {"options": "fast"},
    ],
)
def test_feed_definitions_the_document_forbids_are_refused_by_the_api(tmp_path: Path, changes: dict[str, Any]) -> None:
    api, _ = _feed_api(tmp_path)
    body = _feed_body(tmp_path, **changes)
    assert not _fits("FeedRequest", body)
    with pytest.raises(RequestRefused):
        api.create_feed(OPERATOR, body)  # refused before the app DB is asked


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"schedule": {"cron": "0 2 * * *"}, "pattern": "*.csv", "paused": True},
        {"schedule": {"every_seconds": MIN_EVERY_SECONDS}, "expect_every_hours": 0.5, "after_success": "delete"},
        {"schedule": {"every_seconds": MAX_EVERY_SECONDS}, "expect_every_hours": None, "after_success": "keep"},
        {"options": {"format": "csv", "mode": "upsert"}, "expect_every_hours": MAX_EXPECT_HOURS},
        {"customer_id": None},  # a token of one customer names it
    ],
)
def test_feed_definitions_the_checker_accepts_fit_the_document(tmp_path: Path, changes: dict[str, Any]) -> None:
    api, _ = _feed_api(tmp_path)
    body = _feed_body(tmp_path, **changes)
    assert _fits("FeedRequest", body) and _accepted(api, body)


def test_a_move_to_after_success_fits_the_document_and_the_api_but_not_one_under_the_prefix(tmp_path: Path) -> None:
    api, _ = _feed_api(tmp_path)
    for target, taken in (("done", True), ("incoming/done", False)):
        body = _feed_body(tmp_path, after_success={"move_to": (tmp_path / "acme" / target).as_uri()})
        assert _fits("FeedRequest", body) and _accepted(api, body) == taken, target


def _a_feed(**changes: Any) -> Feed:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    row: dict[str, Any] = {
        "id": JOB_ID,
        "customer_id": "acme",
        "product_type": "users",
        "prefix_uri": "file:///b/acme/in/",
        "pattern": "*.csv",
        "options": {"mode": "upsert"},
        "schedule": {"cron": "0 2 * * *"},
        "after_success": {"move_to": "file:///b/acme/done/"},
        "expect_every_hours": 24.0,
        "paused": False,
        "next_run_at": now,
        "last_run_at": None,
        "last_run_error": None,
        "last_run_found": None,
        "last_run_enqueued": None,
        "last_new_at": None,
        "late": False,
        "created_at": now,
        "updated_at": now,
    }
    return Feed(**{**row, **changes})


def test_a_feeds_view_fits_the_document_with_or_without_its_files() -> None:
    now = datetime(2024, 5, 2, 2, 0, tzinfo=UTC)
    fresh, paused = _a_feed(), _a_feed(paused=True, after_success="keep", schedule={"every_seconds": 60})
    run = _a_feed(last_run_at=now, last_run_found=3, last_run_enqueued=1, last_run_error="the store is down", late=True)
    for feed in (fresh, paused, run):
        assert _fits("Feed", feed_view(feed)), feed_view(feed)
        assert not _fits("FeedDetail", feed_view(feed))
    assert feed_view(paused)["next_run_at"] is None
    imported = FeedFile("a" * 32, "file:///b/acme/in/a.csv", "3:1", 3, COMPLETE, 1, now, now, None, "succeeded")
    refused = FeedFile("b" * 32, "file:///b/acme/in/b.csv", "4:1", 4, None, 1, now, None, "unknown option", None)
    counts = {"seen": 2, "imported": 1, "failed": 1, "pending": 0}
    detail = feed_view(run, counts, [imported, refused])
    assert [file["status"] for file in detail["recent"]] == ["succeeded", "refused"]
    assert _fits("FeedDetail", detail) and not _fits("Feed", detail), detail
    assert _fits("FeedRun", {"found": 3, "enqueued": 1, "error": None, "feed": detail})


def test_the_feed_routes_answer_503_while_the_app_database_is_unreachable(tmp_path: Path) -> None:
    _, app = _feed_api(tmp_path)
    version = "a" * 32
    for method, path, template, body in (
        ("GET", "/feeds", "/feeds", None),
        ("POST", "/feeds", "/feeds", _feed_body(tmp_path)),
        ("GET", f"/feeds/{JOB_ID}", "/feeds/{feed_id}", None),
        ("PATCH", f"/feeds/{JOB_ID}", "/feeds/{feed_id}", {"paused": True}),
        ("DELETE", f"/feeds/{JOB_ID}", "/feeds/{feed_id}", None),
        ("POST", f"/feeds/{JOB_ID}/run", "/feeds/{feed_id}/run", None),
        ("POST", f"/feeds/{JOB_ID}/files/{version}/retry", "/feeds/{feed_id}/files/{version}/retry", None),
    ):
        result = app.simulate_request(method, path, json=body, headers=AUTH)
        assert result.status_code == 503, (method, path, result.text)
        _check(result, template, method.lower())
        assert PASSWORD not in result.text
