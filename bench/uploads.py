"""The SPEC 19 figures of `make bench` (UPLOADS=0 leaves them out, UPLOADS=only runs nothing else): 1 GiB files
uploaded over tus 1.0 to a real gunicorn at /uploads, for customer "uploader" (with a database of its own).

A REST server of their own runs on the session's workers and app DB as `make serve` starts it (gunicorn.conf.py's
settings), warmed up by one ten-row job through POST /enqueue, a tiny upload and a few GET /healthz. Then:

1. one client, one upload in one PATCH (tus-js-client's default chunkSize=Infinity), timed from its creation
   (POST /uploads) to the PATCH's answer: MB/s (10^6 bytes/s) and MiB/s, the target at least 200 MB/s; with the
   REST processes' CPU seconds and the highest growth of one's RSS;
2. the same with 64 MiB PATCHes, one after another;
3. eight clients at once, one PATCH each, while GET /healthz (every 0.1 s) and POST /enqueue of a ten-row job of
   customer "small" (every 0.25 s) are timed to their answers, each on a new connection: p99 under 1 s. Every
   gunicorn process's RSS is sampled every 50 ms with psutil, and its VmHWM reset at the start and read at the end:
   its growth over the RSS before the uploads must stay well under 64 MiB (no process holds 64 MiB of upload data).

The client sends each body with sendfile(2) from one cached file of random bytes (.data/bench/upload-1GiB.bin, its
sha256 beside it): it holds none of it in memory and takes little CPU from the server. Every finished upload is
checked (HEAD: Upload-Offset = Upload-Length; the stored file: the source's size and sha256), then deleted (DELETE
/uploads/<id>) and must be gone; the customer's upload folders are removed at the end whatever happened. Every job
enqueued beside the uploads must succeed with its 10 rows.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import small
from bench.reader import JobReader
from bench.runs import RestServer, Session
from service.sources.parts import final_path, part_path

CUSTOMER = "uploader"  # in the bench's customer map, with a database of its own
FILENAME = "upload-bench.bin"
MB, MiB, GiB = 1000 * 1000, 1024 * 1024, 1024 * 1024 * 1024
SIZE = GiB
CLIENTS = 8
CHUNK = 64 * MiB
TARGET_RATE = 200 * MB  # one client, bytes/s
TARGET_LATENCY = 1.0  # p99 of GET /healthz and POST /enqueue during the eight uploads, seconds
TARGET_HELD = 64 * MiB  # upload data a REST process may hold
HEALTHZ_EVERY = 0.1
ENQUEUE_EVERY = 0.25
SAMPLE_EVERY = 0.05
PATCH_TIMEOUT = 600.0  # no byte sent or answered for this long: the server is stuck
PROBE_TIMEOUT = 30.0
LABEL = "uploads (tus 1.0, SPEC 19)"


@dataclass
class Source:
    """The file every upload sends."""

    path: Path
    size: int
    sha256: str


@dataclass
class Sent:
    """One client's upload: its path on the server, seconds from creation to the last PATCH answered, PATCHes; for a
    run alone, the REST processes' CPU seconds (user + system, all of them) and the highest RSS growth of one."""

    path: str
    seconds: float
    patches: int
    cpu: float = 0.0
    growth: int = 0


@dataclass
class Memory:
    """One gunicorn process during a run: RSS before it, highest RSS sampled, VmHWM since the start (0 when the
    kernel would not reset it), RSS after, CPU seconds (user + system) used, and the most connections to the server
    it held at once (sampled every 0.5 s: the uploads it was receiving, and any probe)."""

    name: str
    before: int
    sampled: int
    hwm: int
    after: int
    cpu: float
    connections: int

    @property
    def growth(self) -> int:
        """Peak over the RSS before the run."""
        return max(self.sampled, self.hwm) - self.before


@dataclass
class Probed:
    """Requests of one kind beside the uploads: latencies of those answered as they must be, failures' reasons."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Uploads:
    """The figures: one client in one PATCH, in 64 MiB PATCHes, eight clients at once and what answered beside."""

    source: Source
    one: Sent
    chunked: Sent
    many: list[Sent]
    many_seconds: float
    healthz: Probed
    enqueue: Probed
    memory: list[Memory]


def source(work: Path) -> Source:
    """The cached 1 GiB of random bytes (written once, with its sha256 beside it)."""
    path = work / f"upload-{SIZE // GiB}GiB.bin"
    digest = path.with_name(path.name + ".sha256")
    if path.is_file() and path.stat().st_size == SIZE and digest.is_file():
        return Source(path, SIZE, digest.read_text().strip())
    making = path.with_name(path.name + ".part")
    generator, sha = random.Random(19), hashlib.sha256()
    with making.open("wb") as out:
        for _ in range(SIZE // MiB):
            block = generator.randbytes(MiB)
            out.write(block)
            sha.update(block)
        out.flush()
        os.fsync(out.fileno())  # on disk now, not written back during the first timed upload
    digest.write_text(sha.hexdigest() + "\n")
    os.replace(making, path)
    return Source(path, SIZE, sha.hexdigest())


def call(
    rest: RestServer, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[http.client.HTTPResponse, bytes]:
    """One request with the operator token on a new connection: the response and its body (raises OSError or
    HTTPException when it failed)."""
    conn = rest.connection(timeout=PROBE_TIMEOUT)
    try:
        conn.request(method, path, body, {"Authorization": f"Bearer {rest.token}", **headers})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def must(
    rest: RestServer, method: str, path: str, status: int, headers: dict[str, str] | None = None
) -> http.client.HTTPMessage:
    """A tus request without a body that must answer `status`, else the bench stops: the answer's headers."""
    try:
        response, answer = call(rest, method, path, {"Tus-Resumable": "1.0.0", **(headers or {})})
    except (OSError, http.client.HTTPException) as exc:
        raise SystemExit(f"bench: {method} {path} failed: {exc!r}\nREST server output: {rest.log_path}") from None
    if response.status != status:
        raise SystemExit(
            f"bench: {method} {path} answered {response.status} (must be {status}): "
            f"{answer[:2000].decode('utf-8', 'replace')}\nREST server output: {rest.log_path}"
        )
    return response.headers


def create(rest: RestServer, length: int) -> str:
    """POST /uploads (tus creation) for the customer: the new upload's path."""
    pairs = {"customer_id": CUSTOMER, "filename": FILENAME}
    metadata = ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items())
    return str(
        must(rest, "POST", "/uploads", 201, {"Upload-Length": str(length), "Upload-Metadata": metadata})["Location"]
    )


def patch(rest: RestServer, path: str, source: Source, offset: int, count: int) -> None:
    """PATCH count bytes of the source at offset, the body sent by sendfile(2); the answer must be 204 with the
    new offset."""
    conn = rest.connection(timeout=PATCH_TIMEOUT)
    try:
        conn.putrequest("PATCH", path, skip_accept_encoding=True)
        headers = {
            "Authorization": f"Bearer {rest.token}",
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(count),
        }
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        assert conn.sock is not None
        with source.path.open("rb") as body:
            conn.sock.sendfile(body, offset, count)
        response = conn.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SystemExit(f"bench: PATCH {path} failed: {exc!r}\nREST server output: {rest.log_path}") from None
    finally:
        conn.close()
    if response.status != 204 or response.headers.get("Upload-Offset") != str(offset + count):
        raise SystemExit(
            f"bench: PATCH {path} of {count:,} bytes at {offset:,} answered {response.status}, Upload-Offset "
            f"{response.headers.get('Upload-Offset')}: {answer[:2000]!r}\nREST server output: {rest.log_path}"
        )


def upload(rest: RestServer, source: Source, chunk: int | None) -> Sent:
    """One tus upload of the whole source, in PATCHes of `chunk` bytes (None: one PATCH), timed."""
    started = time.perf_counter()
    path = create(rest, source.size)
    offset = patches = 0
    while offset < source.size:
        count = source.size - offset if chunk is None else min(chunk, source.size - offset)
        patch(rest, path, source, offset, count)
        offset, patches = offset + count, patches + 1
    return Sent(path, time.perf_counter() - started, patches)


def check_and_delete(session: Session, rest: RestServer, source: Source, sent: Sent) -> None:
    """The upload is finished with every byte of the source (HEAD, and the stored file's size and sha256); then
    DELETE it: its file must be gone and HEAD answer 404."""
    head = must(rest, "HEAD", sent.path, 200)
    offset, length = head.get("Upload-Offset"), head.get("Upload-Length")
    if offset != length or length != str(source.size) or head.get("Upload-Expires"):
        raise SystemExit(f"bench: HEAD {sent.path}: Upload-Offset {offset}, Upload-Length {length}, not finished")
    stored = final_path(session.blob_root, CUSTOMER, sent.path.rsplit("/", 1)[1], FILENAME)
    size = stored.stat().st_size if stored.is_file() else -1
    digest = sha256(stored) if size == source.size else ""
    if digest != source.sha256:
        raise SystemExit(f"bench: the upload {stored} has {size:,} bytes, sha256 {digest or '-'}; must be the source's")
    must(rest, "DELETE", sent.path, 204)
    must(rest, "HEAD", sent.path, 404)
    if stored.exists():
        raise SystemExit(f"bench: DELETE {sent.path} answered 204 but {stored} is still there")


def sha256(path: Path) -> str:
    """The file's sha256, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


class Watch:
    """The RSS of the gunicorn master and each of its workers, sampled with psutil every SAMPLE_EVERY s until
    stopped (and their connections every tenth time); each one's VmHWM is reset to its RSS at the start (`5` into
    /proc/<pid>/clear_refs)."""

    def __init__(self, rest: RestServer) -> None:
        self.port = rest.port
        master = psutil.Process(rest.master.pid)
        self.processes = [master, *master.children(recursive=True)]
        self.before = {p.pid: p.memory_info().rss for p in self.processes}
        self.cpu = {p.pid: _cpu(p) for p in self.processes}
        self.sampled = dict(self.before)
        self.connections = dict.fromkeys(self.before, 0)
        self.reset = True
        for p in self.processes:
            try:
                Path(f"/proc/{p.pid}/clear_refs").write_text("5")
            except OSError:
                self.reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        turn = 0
        while not self._stop.wait(SAMPLE_EVERY):
            turn += 1
            self._sample(turn % 10 == 1)

    def _sample(self, connections: bool = False) -> None:
        for p in self.processes:
            try:
                self.sampled[p.pid] = max(self.sampled[p.pid], p.memory_info().rss)
                if connections:
                    held = sum(c.laddr.port == self.port for c in p.net_connections("tcp") if c.status == "ESTABLISHED")
                    self.connections[p.pid] = max(self.connections[p.pid], held)
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> list[Memory]:
        """Each process's figures, the master first."""
        self._stop.set()
        self._thread.join()
        self._sample()
        found = []
        for i, p in enumerate(self.processes):
            hwm = 0
            if self.reset:
                status = Path(f"/proc/{p.pid}/status").read_text()
                hwm = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
            name = "master" if i == 0 else f"worker {i}"
            cpu, connections = _cpu(p) - self.cpu[p.pid], self.connections[p.pid]
            rss = p.memory_info().rss
            found.append(Memory(name, self.before[p.pid], self.sampled[p.pid], hwm, rss, cpu, connections))
        return found


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def alone(rest: RestServer, source: Source, chunk: int | None) -> Sent:
    """One upload with nothing beside it, the REST processes watched meanwhile."""
    watch = Watch(rest)
    sent = upload(rest, source, chunk)
    memory = watch.stop()
    sent.cpu, sent.growth = sum(one.cpu for one in memory), max(one.growth for one in memory)
    return sent


class Probe:
    """One request sent every `every` s from a thread of its own (the next one at once when an answer came late),
    each on a new connection, until stopped: the latencies of those that answered `status`, and their bodies."""

    def __init__(self, rest: RestServer, every: float, method: str, path: str, status: int, body: bytes = b"") -> None:
        self.rest, self.every, self.request, self.status = rest, every, (method, path, body), status
        self.probed, self.answers = Probed(), list[bytes]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> Probed:
        self._stop.set()
        self._thread.join()
        return self.probed

    def _loop(self) -> None:
        method, path, body = self.request
        headers = {"Content-Type": "application/json"} if body else {}
        due = time.perf_counter()
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            started = time.perf_counter()
            due = max(due + self.every, started)
            try:
                response, answer = call(self.rest, method, path, headers, body)
            except (OSError, http.client.HTTPException) as exc:
                self.probed.failures.append(repr(exc))
                continue
            if response.status != self.status:
                self.probed.failures.append(f"{method} {path} answered {response.status}: {answer[:200]!r}")
                continue
            self.probed.latencies.append(time.perf_counter() - started)
            self.answers.append(answer)


def at_once(rest: RestServer, source: Source) -> tuple[list[Sent], float]:
    """CLIENTS uploads of the source started together, one PATCH each: each one's figures, and the seconds from the
    start to the last one's answer."""
    gate = threading.Barrier(CLIENTS + 1)
    sent: list[Sent | None] = [None] * CLIENTS
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            gate.wait()
            sent[i] = upload(rest, source, None)
        except BaseException as exc:  # SystemExit too: handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return [one for one in sent if one is not None], elapsed


def warm_up(session: Session, rest: RestServer, uri: str, src: Source) -> None:
    """One small job through POST /enqueue, a 4-byte upload and a few GET /healthz, before anything is measured."""
    small.warm_up(session, rest, uri)
    path = create(rest, 4)
    patch(rest, path, src, 0, 4)
    must(rest, "DELETE", path, 204)
    for _ in range(4):
        must(rest, "GET", "/healthz", 200)


def check_jobs(session: Session, job_ids: list[str]) -> None:
    """Every small job enqueued beside the uploads succeeded with its 10 rows."""
    if not job_ids:
        return
    jobs = JobReader(session.app)
    try:
        since = time.perf_counter()
        end = small.wait_all(session, jobs, job_ids, since)
        final = jobs.get_many(job_ids)
    finally:
        jobs.close()
    posted = [small.Posted(job_id, since, 0.0, end, final.get(job_id)) for job_id in job_ids]
    small.check(session, posted, "small job beside the uploads")


def run(session: Session, work: Path) -> Uploads:
    """Every upload run on a REST server of its own; the figures."""
    src = source(work)
    uri = small.write_file(session.blob_root).as_uri()
    try:
        with RestServer(session.env, session.work / "rest-uploads.log") as rest:
            warm_up(session, rest, uri, src)
            one = alone(rest, src, None)
            check_and_delete(session, rest, src, one)
            chunked = alone(rest, src, CHUNK)
            check_and_delete(session, rest, src, chunked)
            watch = Watch(rest)
            body = json.dumps({"customer_id": small.CUSTOMER, "product_type": "users", "blob_uri": uri}).encode()
            healthz = Probe(rest, HEALTHZ_EVERY, "GET", "/healthz", 200)
            enqueue = Probe(rest, ENQUEUE_EVERY, "POST", "/enqueue", 202, body)
            try:
                many, seconds = at_once(rest, src)
            finally:
                probed = healthz.stop(), enqueue.stop()
                memory = watch.stop()
            for sent in many:
                check_and_delete(session, rest, src, sent)
            check_jobs(session, [str(json.loads(answer)["job_id"]) for answer in enqueue.answers])
            if rest.master.poll() is not None:
                raise SystemExit(f"bench: the REST server exited during the uploads; its output: {rest.log_path}")
    finally:
        shutil.rmtree(session.blob_root / CUSTOMER, ignore_errors=True)
        shutil.rmtree(part_path(session.blob_root, CUSTOMER, "x").parent, ignore_errors=True)
    return Uploads(src, one, chunked, many, seconds, *probed, memory)


def report_lines(result: Uploads | None, width: int) -> list[str]:
    """The table's lines: each run's rate and the one-client target, the latencies beside the eight uploads and
    their target, and every REST process's RSS with the memory target."""
    if result is None:
        return []
    size = result.source.size
    workers = len(result.memory) - 1
    lines = [
        f"{LABEL:<{width}}{size / GiB:g} GiB each ({size:,} bytes, sha256 checked, deleted after); REST server: "
        f"gunicorn.conf.py's defaults ({workers} worker processes); body sent by sendfile(2)"
    ]
    for label, sent in (("1 client, one PATCH", result.one), (f"1 client, {CHUNK // MiB} MiB PATCHes", result.chunked)):
        rate = size / sent.seconds
        target = "met" if rate >= TARGET_RATE else "NOT met"
        lines.append(
            f"{'  ' + label:<{width}}{sent.seconds:>7.2f} s {rate / MB:>7.1f} MB/s {rate / MiB:>7.1f} MiB/s "
            f"({sent.patches} PATCH{'es' if sent.patches > 1 else ''}; REST CPU {sent.cpu:.2f} s, RSS growth "
            f"{sent.growth / MiB:+.1f} MiB); target >= {TARGET_RATE / MB:.0f} MB/s: {target}"
        )
    total = size * len(result.many)
    each = sorted(sent.seconds for sent in result.many)
    lines.append(
        f"{'  ' + str(len(result.many)) + ' clients at once':<{width}}{result.many_seconds:>7.2f} s "
        f"{total / result.many_seconds / MB:>7.1f} MB/s {total / result.many_seconds / MiB:>7.1f} MiB/s "
        f"(all together, one PATCH each; each client {each[0]:.1f}-{each[-1]:.1f} s)"
    )
    for label, probed in (("GET /healthz", result.healthz), ("POST /enqueue", result.enqueue)):
        lines.append(_probe_line(f"  {label} meanwhile", probed, width))
    for memory in result.memory:
        hwm = f", VmHWM {memory.hwm / MiB:.1f}" if memory.hwm else ", VmHWM not reset"
        lines.append(
            f"{'  REST ' + memory.name + ' RSS':<{width}}{memory.before / MiB:>7.1f} -> peak "
            f"{memory.sampled / MiB:.1f} MiB (sampled{hwm}; after {memory.after / MiB:.1f}): "
            f"{memory.growth / MiB:+.1f} MiB; CPU {memory.cpu:.2f} s; up to {memory.connections} connections"
        )
    grown = max(memory.growth for memory in result.memory)
    held = "met" if grown < TARGET_HELD else "NOT met"
    lines.append(
        f"{'  ... highest growth':<{width}}{grown / MiB:>7.1f} MiB; target < {TARGET_HELD // MiB} MiB of upload data "
        f"held by any REST process: {held}"
    )
    return lines


def _probe_line(label: str, probed: Probed, width: int) -> str:
    got = probed.latencies
    failed = f"; {len(probed.failures)} FAILED, first: {probed.failures[0]}" if probed.failures else ""
    if not got:
        return f"{label:<{width}}no answer{failed}"
    p99 = small.percentile(got, 0.99)
    target = "met" if p99 < TARGET_LATENCY and not probed.failures else "NOT met"
    return (
        f"{label:<{width}}median {small.percentile(got, 0.5) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {max(got) * 1000:.0f} ms ({len(got)} requests{failed}); target p99 < {TARGET_LATENCY:g} s: {target}"
    )
