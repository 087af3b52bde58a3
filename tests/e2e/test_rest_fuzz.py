"""Fuzz the real REST server from its own OpenAPI document (schemathesis): whatever comes
in, with a token, a wrong token or none, the answer is never a 5xx and always JSON."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from service.edges.rest.openapi import document
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.slow

# An upload's bytes (tus PATCH and creation-with-upload) are raw bytes.
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=4096))
schema = schemathesis.openapi.from_dict(document())
PAGES = {
    "/ui": "text/html",
    "/ui/tus.min.js": "text/javascript",
    "/metrics": "text/plain",
}  # the routes that answer something else than JSON when they succeed
LIMIT_REQUEST_LINE = 4094  # gunicorn's default, which gunicorn.conf.py keeps


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> str:
    _, url = stack.gunicorn()
    return url


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.parametrize("token", ["tok-admin", "tok-acme", "not-a-token"])
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, base_url: str, token: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:300])
    if response.status_code == 204 or case.method == "HEAD":  # no body (tus answers, SPEC 19)
        assert not response.content, (case.method, case.formatted_path, response.status_code)
        return
    if response.status_code == 414:
        # gunicorn itself refuses a request line over its limit_request_line (4094 bytes), before
        # the app, with its own short HTML page: only a request that long may get it.
        line = f"{case.method} {response.request.path_url} HTTP/1.1"
        assert len(line.encode()) > LIMIT_REQUEST_LINE, (case.formatted_path, len(line.encode()))
        return
    content_type = response.headers.get("content-type") or [""]
    page = case.method == "GET" and response.status_code < 400
    expected = PAGES.get(case.path, "application/json") if page else "application/json"
    assert str(content_type[0] if isinstance(content_type, list) else content_type).startswith(expected), (
        case.formatted_path,
        response.status_code,
        case.method,
    )
    if token == "not-a-token" and case.path not in ("/healthz", "/readyz", "/openapi.json", *PAGES):
        assert response.status_code in (401, 404, 405, 413, 415), response.status_code
