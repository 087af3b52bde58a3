"""The SPEC 20 figure of `make bench` (FEEDS=0 leaves it out, FEEDS=only runs nothing else): one run of a feed over a
prefix of 100,000 files that are all imported already, on the blob root and on S3, in under 10 s and 100 MiB.

Each source gets a fresh app DB of its own (no worker runs on it: a sweep would lead the feed first) and customer
"feeder". The files are written under <blob root>/feeder/feed-bench-<8 hex>/ (100 folders of 1,000, changed an hour
ago: a run leaves out files changed in the last 5 s); the objects are put into SeaweedFS's S3 server (bench/seaweed.py:
moto, which the S3 tests use, takes 40-70 s to serve this listing alone) under
s3://feed-bench/landing/feeder/feed-bench-<8 hex>/. The feed is created as POST /feeds creates it, and its ledger
filled with one row per file by one COPY: the version each has (the mtime the files were given, the ETag S3 gives a
small object, the MD5 of its bytes in quotes), its id made as a run makes it (`feeds.version_id`,
`feeds.version_text`); then ANALYZEd, as autovacuum would have. Should a row not be what the run computes, the run
enqueues that file, and the table shows it.

The run is timed in a process of its own (`python -m bench.feeds run <feed id>`, as a worker's sweep leads it:
`FeedStore.lead`, then `feeds.run`), so that its memory is the run's alone: its RSS before the run, and its peak
during it (VmHWM, reset at the start). It must find 100,000 files and enqueue none; the table shows what it did.
For S3 two more figures are measured the same way: a bare list_objects_v2 pagination through the service's boto3
client (the server's answers and botocore's parsing, nothing of the feed), and the same pages fetched as plain
(presigned) HTTP GETs and not parsed (the server alone). When a target is missed, the run is done once more under
cProfile and its busiest functions printed.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import html
import io
import json
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from bench.data import HEADER
from bench.seaweed import seaweed_server
from service.config import PROJECT_ROOT, Config, load_config
from service.schema.products import ProductRegistry
from service.sources import prefixes, s3
from service.stages import feeds
from service.stages.messages import dispatch
from service.stages.services import Services
from service.storage.feeds import FeedStore
from service.storage.jobs import JobStore, migrate

CUSTOMER = "feeder"
FOLDER = "feed-bench"
FILES = 100_000
PER_FOLDER = 1_000
BODY = (HEADER + "u1,u1@example.com,Ann,Lee,student,30,yes,2024-03-01T09:30:00Z\n").encode()
BUCKET, PREFIX, REGION = "feed-bench", "landing", "us-east-1"
# The S3 server's one identity; fake keys also keep boto3 from looking for real credentials.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHFEEDS000000",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": REGION,
}
MiB = 1024 * 1024
TARGET_SECONDS = 10.0
TARGET_RSS = 100 * MiB
PROFILE_LINES = 14
LABEL = "feeds (SPEC 20)"


@dataclass
class Measured:
    """One timed pass in a process of its own: what it found (and enqueued: a run), seconds, its RSS before and its
    peak during the pass (isolated: VmHWM was reset at the start; else the process's peak since it started)."""

    found: int
    enqueued: int
    error: str | None
    seconds: float
    before: int
    peak: int
    isolated: bool
    profile: list[str] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        """It found every file and enqueued none, without an error."""
        return self.found == FILES and self.enqueued == 0 and self.error is None

    @property
    def met(self) -> bool:
        """Counted right, and within both targets."""
        return self.counted and self.seconds < TARGET_SECONDS and self.peak < TARGET_RSS


@dataclass
class Source:
    """One source's figures: the run, the set-up's steps (label, seconds), and for S3 the bare listings."""

    label: str
    run: Measured
    setup: list[tuple[str, float]]
    listings: list[tuple[str, Measured]] = field(default_factory=list)


# -- the bench's side ------------------------------------------------------------------------------------------


def run(create_database: Callable[[str], str], work: Path) -> list[Source]:
    """Both sources, each on fresh databases from create_database; the figures. The files, the customer map and
    the S3 server's data are named for this bench alone: benches sharing .data/bench do not meet."""
    blob_root = work / "blobs"
    folder = f"{FOLDER}-{uuid.uuid4().hex[:8]}"
    files = blob_root / CUSTOMER / folder
    work.mkdir(parents=True, exist_ok=True)
    found = []
    try:
        with tempfile.TemporaryDirectory(prefix="feeds-", dir=work) as scratch:
            started = time.perf_counter()
            mtime_ns = write_files(files)
            setup = [("files written", time.perf_counter() - started)]
            env = environment(create_database, Path(scratch), blob_root, None)
            uri = files.as_uri() + "/"
            found.append(measure_source("file (blob root)", env, uri, {"mtime_ns": mtime_ns}, setup))
            objects = ((f"{PREFIX}/{CUSTOMER}/{folder}/{name}", BODY) for name in names())
            with seaweed_server(Path(scratch), BUCKET, objects, CREDENTIALS) as (endpoint, filled):
                env = environment(create_database, Path(scratch), blob_root, endpoint)
                uri = f"s3://{BUCKET}/{PREFIX}/{CUSTOMER}/{folder}/"
                etag = f'"{hashlib.md5(BODY).hexdigest()}"'  # S3's ETag of an object put in one request
                setup = [("SeaweedFS started and filled", filled)]
                source = measure_source("s3 (SeaweedFS)", env, uri, {"etag": etag}, setup)
                source.listings = [
                    ("bare list_objects_v2 (boto3)", child(env, "list", uri)),
                    ("the server alone (raw GETs)", child(env, "get", uri)),
                ]
                found.append(source)
    finally:
        shutil.rmtree(files, ignore_errors=True)
    return found


def write_files(folder: Path) -> int:
    """FILES one-row CSVs in folders of PER_FOLDER, all changed an hour ago: that mtime."""
    past = time.time_ns() - 3600 * 10**9
    made = folder
    for name in names():
        path = folder / name
        if path.parent != made:
            made = path.parent
            made.mkdir(parents=True)
        path.write_bytes(BODY)
        os.utime(path, ns=(past, past))
    return past


def environment(
    create_database: Callable[[str], str], scratch: Path, blob_root: Path, endpoint: str | None
) -> dict[str, str]:
    """The environment a worker of a fresh app DB would run with: customer "feeder", with an S3 area at endpoint."""
    app = create_database("feeds")
    migrate(app)
    entry: dict[str, Any] = {"dsn": create_database(CUSTOMER)}
    if endpoint is not None:
        entry["s3"] = {"bucket": BUCKET, "prefix": PREFIX, "endpoint_url": endpoint, "region": REGION}
    map_path = scratch / f"customer_map_{'s3' if endpoint else 'file'}.json"
    map_path.write_text(json.dumps({CUSTOMER: entry}))
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "CONFIG_ENV")}
    env.update(APP_DB_DSN=app, CUSTOMER_MAP_PATH=str(map_path), BLOB_ROOT=str(blob_root), **CREDENTIALS)
    return env


def measure_source(
    label: str, env: dict[str, str], prefix_uri: str, version: dict[str, Any], setup: list[tuple[str, float]]
) -> Source:
    """Create the feed, fill its ledger, time one run (again under cProfile when it missed a target)."""
    config = load_config(env)
    started = time.perf_counter()
    feed_id = create_feed(config, prefix_uri, version)
    setup.append((f"feed created, ledger filled ({FILES:,} rows)", time.perf_counter() - started))
    measured = child(env, "run", feed_id)
    if not measured.met:
        measured.profile = child(env, "run", feed_id, profile=True).profile
    return Source(label, measured, setup)


def create_feed(config: Config, prefix_uri: str, version: dict[str, Any]) -> str:
    """A feed of the prefix, as POST /feeds makes it, with every file under it in its ledger (each of this version,
    as the listing names it: an mtime, an ETag), ids as a run makes them: the feed's id."""
    body = {"customer_id": CUSTOMER, "product_type": "users", "prefix_uri": prefix_uri}
    products = ProductRegistry.load(config.schemas_dir)
    values = feeds.check_feed({**body, "schedule": {"every_seconds": 3600}}, config, products)
    store = FeedStore(str(config.app_db_dsn), maxconn=1)
    try:
        feed = store.create(values)
    finally:
        store.close()
    text = feeds.version_text(len(BODY), version)
    now = datetime.now(UTC).isoformat()
    rows = io.StringIO()
    for name in names():
        uri = feed.prefix_uri + name
        rows.write(f"{feed.id}\t{feeds.version_id(uri, text)}\t{uri}\t{text}\t{len(BODY)}\t{now}\n")
    rows.seek(0)
    conn = psycopg2.connect(str(config.app_db_dsn))
    try:
        with conn, conn.cursor() as cur:
            columns = "feed_id, version_id, key, version, size, settled_at"
            cur.copy_expert(f"COPY import_feed_files ({columns}) FROM STDIN", rows)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE import_feed_files")
    finally:
        conn.close()
    return feed.id


def names() -> Iterator[str]:
    """The files' names below the feed's prefix, in key order."""
    for i in range(FILES):
        yield f"{i // PER_FOLDER:03d}/{i:06d}.csv"


def child(env: dict[str, str], what: str, argument: str, profile: bool = False) -> Measured:
    """One pass (`run`, `list` or `get`) timed in a process of its own."""
    command = [sys.executable, "-m", "bench.feeds", what, argument, *(["--profile"] if profile else [])]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(command[1:])}` exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return Measured(**json.loads(done.stdout.splitlines()[-1]))


def report_lines(found: list[Source] | None, width: int) -> list[str]:
    """The table: for each source the run's files, time and memory against the targets; for S3 the bare listings
    beside it; the set-up's steps; the profile of a run that missed."""
    if not found:
        return []
    target = f"< {TARGET_SECONDS:g} s, < {TARGET_RSS // MiB} MiB"
    lines = [
        f"{LABEL:<{width}}one run over {FILES:,} files all imported already, in a process of its own "
        f"(found must be {FILES:,}, enqueued 0)",
        f"{'  source':<{width}}{'found':>9}{'enqueued':>10}{'seconds':>9}{'RSS before':>12}{'RSS peak':>10}  target",
    ]
    for source in found:
        lines.append(_line(f"  {source.label}", source.run, width) + f"  {target}: {_verdict(source.run)}")
        for label, measured in source.listings:
            lines.append(_line(f"    {label}", measured, width))
        steps = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in source.setup)
        lines.append(f"{'    set-up':<{width}}{steps}")
        if source.run.profile:
            lines.append(f"{'    profile of the run':<{width}}(cProfile, by own time)")
            lines.extend(f"      {text}" for text in source.run.profile)
    if not all(one.isolated for source in found for one in [source.run, *(m for _, m in source.listings)]):
        lines.append(f"{'  *':<{width}}VmHWM not reset: the process's peak since it started")
    return lines


def _line(label: str, measured: Measured, width: int) -> str:
    peak = f"{measured.peak / MiB:>6.1f} MiB" + ("" if measured.isolated else "*")
    return (
        f"{label:<{width}}{measured.found:>9,}{measured.enqueued:>10,}{measured.seconds:>9.2f}"
        f"{measured.before / MiB:>8.1f} MiB{peak:>10}"
    )


def _verdict(measured: Measured) -> str:
    if not measured.counted:
        return f"NO: WRONG COUNTS (found {measured.found:,}, enqueued {measured.enqueued:,}, error {measured.error})"
    missed = [
        name
        for name, over in (("time", measured.seconds >= TARGET_SECONDS), ("memory", measured.peak >= TARGET_RSS))
        if over
    ]
    return "yes" if not missed else f"NO ({' and '.join(missed)})"


# -- the processes' side ---------------------------------------------------------------------------------------


def timed(work: Callable[[], tuple[int, int, str | None]], profile: bool) -> dict[str, Any]:
    """Run the pass once: what it found, seconds, RSS before, peak RSS during it (and its profile, asked)."""
    before = _status("VmRSS")
    isolated = _reset_peak()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    found, enqueued, error = work()
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    peak = _status("VmHWM") if isolated else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures = dict(found=found, enqueued=enqueued, error=error, seconds=seconds, before=before, peak=peak)
    return {**figures, "isolated": isolated, "profile": _profile(profiler) if profiler else []}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _profile(profiler: cProfile.Profile) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(PROFILE_LINES)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return [line.replace(str(PROJECT_ROOT) + "/", "") for line in lines[start:] if line.strip()]


def run_feed(feed_id: str) -> tuple[int, int, str | None]:
    """One run of the feed, led as a worker's sweep leads it."""
    config = load_config()
    app = str(config.app_db_dsn)
    services = Services(
        config, JobStore(app, dispatch=dispatch, maxconn=1), ProductRegistry.load(config.schemas_dir), app
    )
    with services.feeds.lead(feed_id) as lead:
        if lead is None:
            raise SystemExit(f"feed {feed_id} is led by another process")
        result = feeds.run(services, lead)
    return result.found, result.enqueued, result.error


def list_objects(prefix_uri: str) -> tuple[int, int, str | None]:
    """Page through list_objects_v2 of the prefix with the service's client, counting the keys."""
    config = load_config()
    found = prefixes.locate(prefix_uri, CUSTOMER, config)
    assert isinstance(found, s3.S3Object), found
    keys = 0
    for page in (
        s3.client(found.endpoint_url, found.region)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=found.bucket, Prefix=found.key)
    ):
        keys += len(page.get("Contents", []))
    return keys, 0, None


def get_pages(prefix_uri: str) -> tuple[int, int, str | None]:
    """The same pages as plain GETs to the area's endpoint (signed as boto3 signs them), each read whole and its keys
    counted, nothing parsed."""
    import boto3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    found = prefixes.locate(prefix_uri, CUSTOMER, load_config())
    assert isinstance(found, s3.S3Object), found
    credentials = boto3.session.Session().get_credentials()
    keys, token = 0, ""
    while True:
        query = {"list-type": "2", "prefix": found.key}
        if token:
            query["continuation-token"] = token
        url = f"{found.endpoint_url}/{found.bucket}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
        request = AWSRequest("GET", url)
        S3SigV4Auth(credentials, "s3", found.region or REGION).add_auth(request)
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(request.headers)), timeout=60) as answer:
            body = answer.read().decode()
        keys += body.count("<Key>")
        more = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
        if more is None:
            return keys, 0, None
        token = html.unescape(more.group(1))


def main() -> None:
    """A pass timed in this process, its figures printed as one JSON line."""
    parser = argparse.ArgumentParser(description="bench/feeds.py's processes")
    parser.add_argument("what", choices=("run", "list", "get"))
    parser.add_argument("argument", nargs="?", default="")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    work = {"run": run_feed, "list": list_objects, "get": get_pages}[args.what]
    print(json.dumps(timed(lambda: work(args.argument), args.profile)))


if __name__ == "__main__":
    main()
