"""`importctl worker`: run `dramatiq actors` and start it again when it dies.

The dramatiq master stops all its worker processes when one child dies (dramatiq issue
#505), so something must restart it; SIGTERM/SIGINT are passed on and end the loop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

from service.logs import wrap_line

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0
SHUTDOWN_TIMEOUT_MS = 25_000  # SPEC 10: a worker exits within 30 s of SIGTERM


def worker_command(processes: int, threads: int, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The `dramatiq actors` command line and environment for this many processes and threads."""
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "actors",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--worker-shutdown-timeout",
        str(SHUTDOWN_TIMEOUT_MS),
    ]
    # The actors take their thread count from WORKER_CONCURRENCY (SPEC 4), so pass it on.
    env = dict(environ, WORKER_CONCURRENCY=str(threads))
    # glibc gives each thread that allocates its own malloc arena (up to 8 per core); freed
    # chunk buffers then stay spread over them and a worker's RSS creeps up with the work it
    # has done. Two arenas keep it flat (see docs/performance.md); an operator's value wins.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # A chunk's COPY buffer is a few MiB. Once the first is freed, glibc raises its mmap
    # threshold to that size, so later buffers come from the heap and leave holes there that
    # add up with every chunk: measured, the free memory glibc kept after 3 customers' big
    # imports was 11 MiB at 1M rows and 35-49 MiB at 5M, and the peak grew with the file. A
    # fixed threshold keeps buffers of 256 KiB and more in their own mappings, returned when
    # freed: the peak was 81 MiB at 1M and 85 MiB at 5M, with 2 MiB free kept.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(256 * 1024))
    return command, env


def run_workers(processes: int, threads: int, log_format: str = "text") -> int:
    """Run `dramatiq actors` until told to stop, restarting it after any unexpected exit.

    With log_format json, every line of its output becomes a JSON line: its worker processes
    write JSON already (actors set their format), and the lines of dramatiq's master (boot,
    shutdown, a crash's traceback) are wrapped here."""
    stopping = False
    child: subprocess.Popen[Any] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    command, env = worker_command(processes, threads, os.environ)
    while True:
        if log_format == "json":
            piped = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            child = piped
            relay = threading.Thread(target=_relay_json, args=(piped,), daemon=True)
            relay.start()
            code = piped.wait()
            relay.join(timeout=5)
        else:
            plain = subprocess.Popen(command, env=env)
            child = plain
            code = plain.wait()
        if stopping:
            return 0
        if code in (2, 3):  # dramatiq: import or broker connection failure; restarting will not help
            print(f"importctl: workers could not start (exit {code})", file=sys.stderr)
            return 2
        print(f"importctl: workers exited with {code}; restarting", file=sys.stderr)
        time.sleep(RESTART_DELAY_SECONDS)


def _relay_json(child: subprocess.Popen[str]) -> None:
    """Copy the child's output to stderr, each line as JSON."""
    assert child.stdout is not None
    for line in child.stdout:
        sys.stderr.write(wrap_line(line) + "\n")
        sys.stderr.flush()
