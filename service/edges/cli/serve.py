"""`make serve`: gunicorn (REST), the gRPC server and `dramatiq actors` in the foreground.

All three read the same configuration; the app DB is resolved once here (starting the
embedded Postgres when no DSN is set) and handed to them. Ctrl-C or SIGTERM stops all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from service.config import load_config
from service.errors import ConfigError
from service.storage.db import app_dsn
from service.storage.jobs import migrate

STOP_TIMEOUT_SECONDS = 30


def commands(bin_dir: Path, rest_addr: str) -> dict[str, list[str]]:
    """The three processes, by name."""
    return {
        "rest": [str(bin_dir / "gunicorn"), "-b", rest_addr, "service.rest:app"],
        "grpc": [sys.executable, "-m", "service.grpc_server"],
        "workers": [sys.executable, "-m", "service.cli", "worker"],
    }


def main() -> int:
    """Run the three servers until Ctrl-C/SIGTERM or until one of them exits."""
    try:
        config = load_config()
        dsn = app_dsn(config)
        migrate(dsn)
    except ConfigError as exc:
        print(f"make serve: configuration error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ, APP_DB_DSN=dsn)
    children = {
        name: subprocess.Popen(command, env=env)
        for name, command in commands(Path(sys.executable).parent, config.rest_addr).items()
    }
    print(f"serving REST on http://{config.rest_addr}, gRPC on {config.grpc_addr}; Ctrl-C stops", flush=True)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping and all(child.poll() is None for child in children.values()):
        time.sleep(0.2)
    failed = [name for name, child in children.items() if child.poll() not in (None, 0)]
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    if failed:
        print(f"make serve: {', '.join(failed)} exited unexpectedly", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
