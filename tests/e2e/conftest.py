"""End-to-end fixtures: fresh databases, a blob area, API tokens, real worker processes,
and helpers to start real servers (gunicorn, the gRPC server) on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.storage.jobs import migrate
from tests.conftest import ROOT, Databases
from tests.integration.conftest import (
    pipeline,  # noqa: F401  (the fixture, shared with e2e tests)
    pipeline_env,
    start_workers,
    stop_workers,
)

TOKENS = {"tok-acme": ["acme"], "tok-globex": ["globex"], "tok-admin": ["*"]}
USERS_CSV = "external_id,email,age\nu1,a@example.com,30\nu2,broken,31\nu3,c@example.com,\n"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until something accepts connections on the port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM a process group and return the exit code."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@dataclass
class Stack:
    """Databases, blob area, tokens and running workers shared by a test module."""

    env: dict[str, str]
    app_dsn: str
    customer_dsns: dict[str, str]
    blob_root: Path
    tmp: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Worker pools (`dramatiq actors`), the fixture's first; a test may kill, add or replace them.
    pools: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def blob(self, customer: str, name: str, content: str = USERS_CSV) -> Path:
        """Write a file into a customer's blob area and return its path."""
        path = self.blob_root / customer / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return path

    def start(
        self, *command: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a server process in its own process group; wait for its port if given."""
        process = subprocess.Popen(list(command), env=env or self.env, cwd=ROOT, start_new_session=True)
        self.processes.append(process)
        if port is not None:
            wait_for_port(port, process)
        return process

    def gunicorn(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        """A real gunicorn serving service.rest:app on a free port; (process, base URL)."""
        port = port or free_port()
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        process = self.start(gunicorn, "-b", f"127.0.0.1:{port}", "-w", "2", "service.rest:app", port=port)
        return process, f"http://127.0.0.1:{port}"

    def grpc_server(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        """The real gRPC server on a free port; (process, target)."""
        port = port or free_port()
        env = dict(self.env, GRPC_ADDR=f"127.0.0.1:{port}")
        process = self.start(sys.executable, "-m", "service.grpc_server", port=port, env=env)
        return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Fresh app DB, customers acme and globex, tokens, and one `dramatiq actors` process."""
    yield from make_stack(databases, tmp_path_factory)


def make_stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory, **settings: str) -> Iterator[Stack]:
    """The stack fixture's stack, its workers' environment with these settings too (e.g. CHUNK_ROWS)."""
    app = databases.create("app")
    customers = {"acme": databases.create("acme"), "globex": databases.create("globex")}
    tmp = tmp_path_factory.mktemp("stack")
    root = tmp / "blobs"
    for customer in customers:
        (root / customer).mkdir(parents=True)
    (tmp / "customer_map.json").write_text(json.dumps(customers))
    (tmp / "tokens.json").write_text(json.dumps(TOKENS))
    migrate(app)
    env = pipeline_env(
        app,
        tmp / "customer_map.json",
        root,
        API_TOKENS_PATH=str(tmp / "tokens.json"),
        WORKER_CONCURRENCY="2",
        **settings,
    )
    running = Stack(env, app, customers, root, tmp)
    running.pools.append(start_workers(env))
    try:
        yield running
    finally:
        for pool in running.pools:
            stop_workers(pool)
        for process in running.processes:
            stop(process)
