"""`make run`: import every file in sample/ for the sample customers through the real pipeline.

Starts `dramatiq actors` worker processes, enqueues one upsert job per sample file (product
from the file name: `users.csv`, `courses-extra.kv` ...), waits for all, prints a summary.
Upsert by key makes the command repeatable: a second run finds every row unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.config import Config, load_config
from service.errors import ConfigError, ImportServiceError
from service.schema.products import ProductRegistry
from service.sources import blob
from service.storage.db import app_dsn, customer_dsn, ensure_database
from service.storage.jobs import Job, JobStore, migrate

TIMEOUT_SECONDS = 300
FORMATS = {".csv", ".tsv", ".kv", ".txt", ".xlsx"}


def sample_files(root: Path, customers: list[str]) -> list[tuple[str, str, Path]]:
    """(customer, product, path) for each sample file of each customer, in a stable order."""
    found = []
    for customer in customers:
        folder = root / customer
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.is_file() and path.suffix.lower() in FORMATS:
                product = path.name.split(".")[0].split("-")[0]
                found.append((customer, product, path))
    return found


def main() -> int:
    """Run the sample imports; exit 0 when every job ended as expected (succeeded)."""
    try:
        config = load_config()
        dsn = app_dsn(config)
    except ConfigError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    migrate(dsn)
    for customer in config.customers:
        if ensure_database(customer_dsn(config, customer, dsn)):
            print(f"created database for sample customer {customer}")
    from service.stages.enqueue import check_request, enqueue
    from service.stages.messages import dispatch

    jobs = JobStore(dsn, dispatch=dispatch)
    products = ProductRegistry.load(config.schemas_dir)
    env = dict(os.environ, APP_DB_DSN=dsn)
    worker_log = config.data_dir / "run-workers.log"
    worker_log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting 2 worker processes (`dramatiq actors`), log: {worker_log}")
    with worker_log.open("ab") as log_file:
        workers = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "actors", "--processes", "2"], env=env, stdout=log_file, stderr=log_file
        )
    try:
        ids = []
        for customer, product, path in sample_files(config.blob_root, list(config.customers)):
            body = {
                "customer_id": customer,
                "product_type": product,
                "blob_uri": blob.uri_for(path),
                "options": {"mode": "upsert"},
            }
            job, _ = enqueue(check_request(body, config, products), jobs)
            ids.append((path, job.id))
        finished = [_wait(jobs, job_id) for _, job_id in ids]
    except ImportServiceError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
    _print_summary(config.blob_root, [(p, j) for (p, _), j in zip(ids, finished, strict=True)])
    _write_rejects(config, jobs, products, finished)
    operator_tokens = [t for t, customers in config.tokens.items() if "*" in customers]
    if operator_tokens:
        print(f"\nnext: `make serve` for REST and gRPC; dev token (api_tokens.json): {operator_tokens[0]}")
    return 0 if all(j.status == "succeeded" for j in finished) else 1


def _write_rejects(config: Config, jobs: JobStore, products: ProductRegistry, finished: list[Job]) -> None:
    """Write the rejected rows of the first job that has some to a CSV, as a customer gets them."""
    from service.edges.api import OPERATOR, Api

    job = next((j for j in finished if j.rows_invalid), None)
    if job is None:
        return
    path = config.data_dir / f"rejects-{job.customer_id}-{job.product_type}.csv"
    with path.open("wb") as out:
        for piece in Api(config, jobs, products).rejects_csv(OPERATOR, job.id):
            out.write(piece)
    print(f"\nthe {job.rows_invalid} rejected rows of job {job.id}, with the reasons: {path}")
    print("fix them there and import the file again, or fix the schema and replay the job")


def _wait(jobs: JobStore, job_id: str) -> Job:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job is not None and job.finished:
            return job
        time.sleep(0.2)
    raise ImportServiceError(f"job {job_id} did not finish within {TIMEOUT_SECONDS} s")


def _print_summary(root: Path, rows: list[tuple[Path, Job]]) -> None:
    header = (
        f"{'job':<36}  {'file':<26} {'status':<9} {'total':>5} {'valid':>5} {'invalid':>7} "
        f"{'inserted':>8} {'updated':>7} {'unchanged':>9}"
    )
    print(header)
    print("-" * len(header))
    for path, job in rows:
        name = str(path.relative_to(root))
        print(
            f"{job.id:<36}  {name:<26} {job.status:<9} {job.rows_total:>5} {job.rows_valid:>5} "
            f"{job.rows_invalid:>7} {job.rows_inserted:>8} {job.rows_updated:>7} {job.rows_unchanged:>9}"
        )
        if job.error:
            print(f"{'':<38}error: {job.error}")


if __name__ == "__main__":
    sys.exit(main())
