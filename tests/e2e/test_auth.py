"""Auth fails closed (SPEC 4): no token file, or an empty one, refuses every call unless auth is
off; token files may hold sha256 digests instead of tokens, made by `importctl token new`.

Real gunicorn, the real gRPC server and the real importctl binary."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from service.generated import importer_pb2, importer_pb2_grpc
from tests.conftest import ROOT
from tests.e2e.conftest import Stack, free_port, wait_for_port

IMPORTCTL = shutil.which("importctl", path=str(Path(sys.executable).parent)) or "importctl"
GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def serve(stack: Stack, name: str, **env: str) -> tuple[str, Path]:
    """A gunicorn with these settings (API_TOKENS_PATH="" drops the token file); (URL, its log)."""
    environ = {k: v for k, v in stack.env.items() if k != "API_TOKENS_PATH"}
    environ.update({k: v for k, v in env.items() if v})
    port = free_port()
    output = stack.tmp / f"{name}.log"
    with output.open("ab") as sink:
        process = subprocess.Popen(
            [GUNICORN, "-b", f"127.0.0.1:{port}", "-w", "1", "service.rest:app"],
            env=environ,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.processes.append(process)
    wait_for_port(port, process)
    return f"http://127.0.0.1:{port}", output


def get(url: str, path: str, token: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, payload


def log_says(output: Path, text: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in output.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("tokens", [None, {}])
def test_without_tokens_every_call_is_refused_and_the_server_says_so_at_start(
    stack: Stack, tokens: dict | None
) -> None:
    path = ""
    if tokens is not None:
        (stack.tmp / "empty.json").write_text(json.dumps(tokens))
        path = str(stack.tmp / "empty.json")
    url, output = serve(stack, f"closed-{tokens is None}", API_TOKENS_PATH=path)
    for route in ("/jobs", "/jobs?customer_id=acme"):
        status, answer = get(url, route)
        assert status == 401, answer
        assert "no API tokens are configured" in answer["error"]["message"]
    assert get(url, "/jobs", "anything")[0] == 401
    assert get(url, "/healthz")[0] == 200  # the public routes stay public
    assert log_says(output, "no API tokens are configured")


def test_auth_off_lets_every_caller_act_as_the_operator_with_a_warning_at_start(stack: Stack) -> None:
    url, output = serve(stack, "open", AUTH="off")
    status, answer = get(url, "/jobs")
    assert status == 200 and "jobs" in answer
    assert log_says(output, "auth is off")


def test_a_token_made_by_importctl_token_new_works_through_its_sha256_entry_alone(stack: Stack) -> None:
    made = subprocess.run(
        [IMPORTCTL, "token", "new", "--customer=acme"], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token: ", 1)[1].split()[0]
    entry = made.stdout.strip().splitlines()[-1].strip()
    assert token not in entry and entry.startswith('"sha256:')
    (stack.tmp / "hashed.json").write_text("{" + entry + "}")
    url, output = serve(stack, "hashed", API_TOKENS_PATH=str(stack.tmp / "hashed.json"))
    assert get(url, "/jobs?customer_id=acme", token)[0] == 200
    assert get(url, "/jobs?customer_id=globex", token)[0] == 403  # the token is acme's only
    assert get(url, "/jobs", entry.split('"')[1])[0] == 401  # the digest itself is no token
    assert get(url, "/jobs", token + "x")[0] == 401

    port = free_port()
    env = dict(stack.env, API_TOKENS_PATH=str(stack.tmp / "hashed.json"), GRPC_ADDR=f"127.0.0.1:{port}")
    stack.start(sys.executable, "-m", "service.grpc_server", port=port, env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = importer_pb2_grpc.ImporterStub(channel)
        missing = importer_pb2.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000")
        with pytest.raises(grpc.RpcError) as unknown:
            stub.GetJob(missing, metadata=[("authorization", f"Bearer {token}")], timeout=30)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # authenticated, then no such job
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetJob(missing, metadata=[("authorization", "Bearer nope")], timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert token not in output.read_text(errors="replace")


@pytest.mark.parametrize("customers", ["", "bad id", "acme,,"])
def test_token_new_refuses_a_customer_list_it_cannot_use(stack: Stack, customers: str) -> None:
    made = subprocess.run(
        [IMPORTCTL, "token", "new", f"--customer={customers}"], env=stack.env, capture_output=True, text=True
    )
    if customers == "acme,,":  # empty items are dropped: acme alone
        assert made.returncode == 0 and '["acme"]' in made.stdout
    else:
        assert made.returncode == 2 and "--customer" in made.stderr and "Traceback" not in made.stderr
