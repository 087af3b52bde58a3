"""The workers' metrics (SPEC 16): Dramatiq's own Prometheus middleware, served on
worker_metrics_addr (default 127.0.0.1:9191; "off" for none) by one exposition process per
`dramatiq actors` pool.

Dramatiq's middleware keeps its multiprocess files in one folder for every pool of the
machine (/tmp/dramatiq-prometheus) and never empties it; here each pool has its own, named
after its dramatiq master process (the parent of its worker and fork processes), and the
exposition process removes the folders of masters that are gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware
from dramatiq.middleware import prometheus as dramatiq_prometheus

from service.config import Config, load_config

log = logging.getLogger(__name__)

PREFIX = "import-service-worker-metrics-"


def worker_metrics(config: Config) -> list[Middleware]:
    """The middleware to add to the broker: none when worker_metrics_addr is off."""
    return [] if config.worker_metrics_addr == "off" else [WorkerMetrics()]


class WorkerMetrics(dramatiq_prometheus.Prometheus):  # type: ignore[misc]  # dramatiq is untyped
    """Dramatiq's Prometheus middleware with this pool's own folder and our exposition server."""

    @property
    def forks(self) -> list[Any]:
        return [serve]

    def after_process_boot(self, broker: Any) -> None:
        _use(pool_dir(os.getppid()))
        super().after_process_boot(broker)


def pool_dir(master_pid: int) -> Path:
    """The multiprocess folder of the pool whose dramatiq master has this pid."""
    return Path(tempfile.gettempdir()) / f"{PREFIX}{master_pid}"


def _use(folder: Path) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    dramatiq_prometheus.DB_PATH = str(folder)


def serve() -> int:
    """The exposition process (a dramatiq fork process): serve this pool's metrics on
    worker_metrics_addr. A port in use is one error line; the workers go on without it."""
    config = load_config()
    host, _, port = config.worker_metrics_addr.rpartition(":")
    _remove_stale(Path(tempfile.gettempdir()))
    _use(pool_dir(os.getppid()))
    dramatiq_prometheus.HTTP_HOST, dramatiq_prometheus.HTTP_PORT = host.strip("[]"), int(port)
    try:
        return int(dramatiq_prometheus._run_exposition_server() or 0)
    except OSError as exc:
        log.error(
            "worker metrics: cannot serve on %s (%s); the workers run without it", config.worker_metrics_addr, exc
        )
        return 1


def _remove_stale(root: Path) -> None:
    """Remove the metrics folders of dramatiq masters that no longer run."""
    for folder in root.glob(f"{PREFIX}*"):
        pid = folder.name.removeprefix(PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
