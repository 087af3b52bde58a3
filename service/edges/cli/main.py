"""importctl: enqueue, run and inspect imports and feeds, run workers, migrate the app DB.

Usage:
  importctl enqueue --customer=C --product=P (--file=PATH | --uri=URI | --upload=ID) [--option=K=V]... [--idempotency-key=KEY] [--wait]
  importctl upload FILE --customer=C [--url=URL] [--chunk-size=BYTES] [--enqueue --product=P [--option=K=V]... [--wait]]
  importctl import --customer=C --product=P (--file=PATH | --uri=URI) [--option=K=V]...
  importctl status JOB [--json]
  importctl logs JOB
  importctl watch JOB
  importctl cancel JOB
  importctl undo JOB
  importctl rejects JOB [--output=PATH]
  importctl replay JOB [--wait]
  importctl feed create --customer=C --product=P --prefix=URI (--every=SECONDS | --cron=EXPR) [--pattern=GLOB] [--option=K=V]... [--after-success=WHAT] [--expect-every-hours=H] [--paused]
  importctl feed list [--customer=C] [--limit=N] [--json]
  importctl feed show FEED [--json]
  importctl feed update FEED [--every=SECONDS | --cron=EXPR] [--pattern=GLOB] [--option=K=V]... [--after-success=WHAT] [--expect-every-hours=H]
  importctl feed (pause | resume | run | delete) FEED
  importctl feed files FEED [--state=S] [--limit=N] [--after=V] [--json]
  importctl feed retry FEED VERSION
  importctl worker [--processes=N] [--threads=N]
  importctl migrate
  importctl token new --customer=C
  importctl (-h | --help)

Options:
  --customer=C          Customer id (a key of customer_map.json).
  --product=P           Product type (a schema in schemas/).
  --file=PATH           A local file; it is copied into the customer's blob area first.
  --uri=URI             A file:// URI inside the customer's blob area.
  --upload=ID           A finished upload of the customer (`importctl upload`, or tus at /uploads).
  --url=URL             The REST server `upload` sends to (default: http:// and the configuration's rest_addr).
  --chunk-size=BYTES    Bytes per upload request (a cut-off run resends at most one) [default: 8388608].
  --enqueue             After the upload, start an import of it (through the REST server).
  --option=K=V          A job option, e.g. --option=dry_run=true --option=delimiter=';'.
                        Several sheets of one workbook: --option=sheet=Q1 --option=sheet=Q2.
  --idempotency-key=KEY Enqueue at most one job for this key and request.
  --wait                Wait for the job to end; exit 1 if it failed.
  --json                Print the job (the feed, the feeds) as JSON.
  --output=PATH         Write the rejects.csv there (replaced once complete) instead of to stdout.
  --processes=N         Worker processes [default: 2].
  --threads=N           Threads per worker process (default: WORKER_CONCURRENCY).
  --prefix=URI          The folder or prefix a feed watches, in the customer's area (file://, s3://, az://, gs://).
  --every=SECONDS       Run the feed every SECONDS (10 or more).
  --cron=EXPR           Run the feed on a cron schedule of five fields, in UTC, e.g. '0 2 * * *'.
  --pattern=GLOB        The names under the prefix a feed imports, e.g. '*.csv' (default: all).
  --after-success=WHAT  What becomes of an imported file: keep, delete or move_to:URI (default: keep).
  --expect-every-hours=H  Mark the feed late when it finds no new file for H hours.
  --paused              Create the feed paused (`feed resume` starts it; `feed run` runs it once).
  --limit=N             List at most N feeds, or files of a feed (1 to 1000) [default: 100].
  --state=S             Only the files imported, failed (or refused) or pending (queued or running).
  --after=V             The page of files after version V (the --after the page before names).

`status` prints the job's line, then its source: the blob_uri's scheme, the compression, the
format and the ZIP archive member read, as far as they are known, and the upload it imports
(`--json`: the job's view).
`cancel` stops a queued or running job; `undo` takes back what a succeeded job wrote. Both
print the job; when a worker completes the change, they say so (`status` shows when it has).
`rejects` writes the job's rejected rows as a CSV file: its header columns plus `errors`.
`upload` hands FILE to the REST server over tus and prints its upload id; run again after
Ctrl-C or a dropped connection, it resumes where the server stopped. The bearer token comes
from the IMPORT_TOKEN variable. With --enqueue it then enqueues the upload and prints the
job id (--wait: and waits for the job).
`token new` prints a new random API token for customer C (ids separated by commas, or * for
all) and the line to add to the token file, which keeps only the token's SHA-256 digest.
`replay` validates the rejected rows of a job that has ended again, against the product
schema as it is now, in a new job (nothing is read from the file); it prints that job's id.
`feed create` prints the new feed's id; its first run is due at once unless --paused. `feed show`
prints what the feed watches, its schedule, last and next run, its counts of files and its
latest files (version, job, status, name). `feed update` changes only what it is given and
prints the feed as `show` does, without its files; --option replaces all the feed's options (as
PATCH /feeds/<id> does: give every option to keep). `feed files` prints every file of the feed,
newest first, a line each as `show` prints them, at most --limit, and when more remain, on stderr,
the command that prints the next page (--json: GET /feeds/<id>/files's answer, with its `next`).
`feed run` runs it now, paused or not, and prints what the run found and enqueued; `feed retry`
imports a failed file (VERSION, as `show` and `files` print it) again and prints the new job's
id; `feed delete` keeps the feed's jobs and files.

Exit codes: 0 ok, 1 a job this command waited for (import, enqueue --wait, replay --wait,
watch) failed, no such job or feed, a cancel, undo or replay the job's state refuses, a feed
run that stopped early or is in progress already, a retry of a feed's file whose job did not
fail, or an unreachable customer database; 2 usage or config error, or a refused request (a bad
option, a feed prefix outside the customer's area, a bad schedule): one line naming the field.
Configuration: CONFIG_PATH / CONFIG_ENV and the variables of docs/configuration.md; no token is needed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import psycopg2
from docopt import DocoptExit, docopt

from service import logs
from service.config import Config, load_config
from service.edges.api import OPERATOR, Api
from service.edges.cli.watch import counts, watch
from service.edges.tokens import new_token
from service.errors import ConfigError, ImportServiceError, RequestRefused
from service.logs import describe, redact
from service.sources import blob
from service.stages.enqueue import OPTION_TYPES
from service.storage.db import app_dsn
from service.storage.jobs import Job, JobStore, migrate
from service.storage.views import job_source, job_upload, job_view

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POLL_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    """Run one importctl command; return its exit code."""
    try:
        args = docopt(__doc__, argv=argv, default_help=True)
    except DocoptExit as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)  # it sets the log format once the configuration is read
    except ConfigError as exc:
        print(f"importctl: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RequestRefused as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"importctl: refused{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportServiceError as exc:
        print(f"importctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg2.Error as exc:  # the app DB is unreachable or refuses us: one line, no traceback
        print(f"importctl: cannot use the app database: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: dict[str, Any]) -> int:
    if args["token"]:
        token, entry = new_token(args["--customer"])
        print(
            f"token: {token}\nadd this entry to the token file (API_TOKENS_PATH), then restart the servers:\n  {entry}"
        )
        return EXIT_OK
    config = load_config()
    logs.configure(config.log_format, logging.WARNING)
    if args["upload"]:
        return _upload(args, config)
    if args["worker"]:
        from service.edges.cli.supervisor import run_workers

        threads = int(args["--threads"]) if args["--threads"] else config.worker_concurrency
        return run_workers(int(args["--processes"]), threads, config.log_format)
    dsn = _app_dsn(config)
    if args["migrate"]:
        applied = migrate(dsn)
        print("applied: " + ", ".join(applied) if applied else "app database is up to date")
        return EXIT_OK
    if args["enqueue"] or args["import"]:
        return _enqueue(args, config)
    if args["cancel"] or args["undo"]:
        return _change(args, config, dsn)
    if args["rejects"]:
        return _rejects(args, config, dsn)
    if args["replay"]:
        return _replay(args, config, dsn)
    if args["feed"]:
        return _feed(args, config, dsn)
    jobs = JobStore(dsn, maxconn=2)
    job = jobs.get(args["JOB"])
    if job is None:
        print(f"importctl: no job {args['JOB']}", file=sys.stderr)
        return EXIT_FAILED
    if args["status"]:
        print(json.dumps(job_view(job), indent=2) if args["--json"] else described(job))
    elif args["watch"]:
        job = watch(jobs, job.id, sys.stdout, interactive=sys.stdout.isatty())
        # An undone job had succeeded; failed and cancelled ones did not import their file.
        return EXIT_OK if job.status in ("succeeded", "undone") else EXIT_FAILED
    elif args["logs"]:
        for line in jobs.logs(job.id):
            where = f" row {line.row_number}" if line.row_number is not None else ""
            field = f" [{line.field}]" if line.field else ""
            print(f"{line.at.isoformat()} {line.level:<7}{where}{field} {line.message}")
    return EXIT_OK


@contextmanager
def _operator_api(config: Config, dsn: str) -> Iterator[Api]:
    """An Api that may send stage messages (the workers pick them up), its pool closed after use."""
    from service.schema.products import ProductRegistry
    from service.stages.messages import dispatch

    jobs = JobStore(dsn, dispatch=dispatch, maxconn=2)
    try:
        yield Api(config, jobs, ProductRegistry.load(config.schemas_dir))
    finally:
        jobs.close()


def _change(args: dict[str, Any], config: Config, dsn: str) -> int:
    """Cancel or undo a job as the operator and print it; JobConflict and JobNotFound exit 1 in main."""
    with _operator_api(config, dsn) as api:
        change = api.cancel if args["cancel"] else api.undo
        job, complete = change(OPERATOR, args["JOB"])
    print(described(job))
    if not complete:
        ending = "cancelled" if args["cancel"] else "undone"
        print(f"importctl: a worker completes this; `importctl status {job.id}` shows it {ending}", file=sys.stderr)
    return EXIT_OK


def _replay(args: dict[str, Any], config: Config, dsn: str) -> int:
    """Replay a job's rejects as the operator and print the new job's id; with --wait, exit by its end.

    JobConflict (not ended, no rejects) and JobNotFound exit 1 in main."""
    with _operator_api(config, dsn) as api:
        job, created = api.replay_job(OPERATOR, args["JOB"])
        print(job.id, flush=True)  # before a long wait: a script reading stdout gets it at once
        if not created:  # asked twice: the replay that is queued, running or succeeded, not a new one
            print(f"importctl: job {args['JOB']} is replayed already, by job {job.id} ({job.status})", file=sys.stderr)
        if not args["--wait"]:
            return EXIT_OK
        job = wait_for(job.id, api.jobs)
    print(summary(job), file=sys.stderr)
    return EXIT_OK if job.status == "succeeded" else EXIT_FAILED


def _feed(args: dict[str, Any], config: Config, dsn: str) -> int:
    """A `feed` command as the operator; FeedNotFound, FeedBusy and a run stopped early exit 1 in main."""
    from service.edges.cli import feeds

    options = parse_options(args["--option"])
    with _operator_api(config, dsn) as api:
        try:
            feeds.command(api, args, options)
        finally:
            api.feeds.close()
    return EXIT_OK


def _rejects(args: dict[str, Any], config: Config, dsn: str) -> int:
    """Write the job's rejects.csv, as the operator, to --output or stdout; JobNotFound exits 1 in main."""
    from service.schema.products import ProductRegistry

    output = args["--output"]
    jobs = JobStore(dsn, maxconn=2)
    try:
        api = Api(config, jobs, ProductRegistry.load(config.schemas_dir))
        pieces = api.rejects_csv(OPERATOR, args["JOB"])
        if output is None:
            _write(pieces, sys.stdout.buffer)
            return EXIT_OK
        written = write_file(pieces, Path(output))
    except BrokenPipeError:  # `importctl rejects JOB | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        print(f"importctl: cannot write {output or 'stdout'}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        jobs.close()
    print(f"importctl: wrote {written} rejects to {output}", file=sys.stderr)
    return EXIT_OK


def write_file(pieces: Iterator[bytes], path: Path) -> int:
    """Write a rejects.csv to path and return how many rejects it holds.

    A regular file is written beside it and renamed once complete, so a failure leaves no
    short file that looks whole; anything else (a pipe, /dev/stdout) is written in place.
    """
    if path.exists() and not path.is_file():
        with path.open("wb") as out:
            return _write(pieces, out)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with partial.open("wb") as out:
            written = _write(pieces, out)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return written


def _write(pieces: Iterator[bytes], out: BinaryIO) -> int:
    """Copy the pieces of a rejects.csv to out; the number of rejects (records after the header)."""
    records = RecordCounter()
    for piece in pieces:
        out.write(piece)
        records.feed(piece)
    out.flush()
    return max(records.complete - 1, 0)


class RecordCounter:
    """Counts the records of a CSV fed in pieces: a line end inside quotes belongs to a cell.

    csv.writer quotes every cell holding a quote and doubles the quotes inside, so an odd
    number of quotes since the last record's end means a quoted cell is still open.
    """

    def __init__(self) -> None:
        self.complete = 0
        self._quoted = False

    def feed(self, piece: bytes) -> None:
        """Count the records that end in this piece."""
        *ended, rest = piece.split(b"\n")
        for line in ended:
            self._quoted ^= line.count(b'"') % 2 == 1
            self.complete += not self._quoted
        self._quoted ^= rest.count(b'"') % 2 == 1


def _app_dsn(config: Config) -> str:
    try:
        return app_dsn(config)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot use the app database: {redact(str(exc).strip())}") from None


def _enqueue(args: dict[str, Any], config: Config) -> int:
    """Enqueue a job (copying --file into the blob area), then wait or run it as asked."""
    import actors  # sets the broker, migrates, declares the actors
    from service.stages.enqueue import check_request, enqueue

    services = actors.services()
    customer = args["--customer"]
    body: dict[str, Any] = {"customer_id": customer, "product_type": args["--product"]}
    if args["--upload"]:
        body["upload_id"] = args["--upload"]
    else:
        body["blob_uri"] = args["--uri"] or blob.upload(Path(args["--file"]), customer, config)
    body["options"] = parse_options(args["--option"])
    request = check_request(body, config, services.products, services.uploads)
    job, _ = enqueue(request, services.jobs, args["--idempotency-key"])
    if args["import"]:
        job = _run_until_done(job.id, services.jobs, config)
        print(summary(job))
        return EXIT_OK if job.status == "succeeded" else EXIT_FAILED
    print(job.id)
    if args["--wait"]:
        job = wait_for(job.id, services.jobs)
        print(summary(job), file=sys.stderr)
        return EXIT_OK if job.status == "succeeded" else EXIT_FAILED
    return EXIT_OK


def _upload(args: dict[str, Any], config: Config) -> int:
    """Upload a file over tus (resuming), print its id; then, with --enqueue, start its job."""
    from service.edges.cli import upload

    base_url = args["--url"] or f"http://{config.rest_addr}"
    try:
        chunk = int(args["--chunk-size"])
    except ValueError:
        chunk = 0
    if chunk < 1:
        raise RequestRefused("--chunk-size must be a whole number of bytes, 1 or more", field="chunk_size")
    upload_id = upload.upload(Path(args["FILE"]), args["--customer"], base_url, chunk)
    print(upload_id)
    if not args["--enqueue"]:
        return EXIT_OK
    body = {
        "customer_id": args["--customer"],
        "product_type": args["--product"],
        "upload_id": upload_id,
        "options": parse_options(args["--option"]),
    }
    job_id = upload.enqueue(base_url, body)
    print(job_id)
    if args["--wait"]:
        job = upload.wait(base_url, job_id)
        print(
            f"{job['job_id']}  {job['status']}  inserted={job['rows_inserted']} invalid={job['rows_invalid']}",
            file=sys.stderr,
        )
        return EXIT_OK if job["status"] == "succeeded" else EXIT_FAILED
    return EXIT_OK


def _run_until_done(job_id: str, jobs: JobStore, config: Config) -> Job:
    """Run a Dramatiq worker in this process until the job ends."""
    import dramatiq

    worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=config.worker_concurrency)
    worker.start()
    try:
        return wait_for(job_id, jobs)
    finally:
        worker.stop(timeout=30_000)


def wait_for(job_id: str, jobs: JobStore) -> Job:
    """Poll until the job reaches a final status."""
    while True:
        job = jobs.get(job_id)
        if job is None or job.finished:
            assert job is not None, f"job {job_id} vanished"
            return job
        time.sleep(POLL_SECONDS)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """Turn K=V pairs into an options object; boolean options accept true/false/yes/no/1/0,
    whole-number options (header_row) digits; sheet given twice or more is a list of sheets."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RequestRefused(f"--option must be K=V, got {pair!r}", field="option")
        if OPTION_TYPES.get(key) is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0"):
                raise RequestRefused(f"{key} must be true or false, got {value!r}", field=f"options.{key}")
            options[key] = lowered in ("true", "yes", "1")
        elif OPTION_TYPES.get(key) is int:
            try:
                options[key] = int(value.strip())
            except ValueError:
                raise RequestRefused(f"{key} must be a whole number, got {value!r}", field=f"options.{key}") from None
        elif key == "sheet" and key in options:  # --option=sheet=A --option=sheet=B: both, in that order
            named = options[key]
            options[key] = [*(named if isinstance(named, list) else [named]), value]
        else:
            options[key] = value
    return options


def summary(job: Job) -> str:
    """One line per job: id, what, status and counts (and when it was undone, or why it failed)."""
    line = f"{job.id}  {job.customer_id}/{job.product_type}  {job.status:<9}  total={job.rows_total} {counts(job)}"
    if job.undone_at is not None:
        line += f"  undone_at={job.undone_at.isoformat()}"
    return f"{line}  error: {job.error}" if job.error else line


def described(job: Job) -> str:
    """What status, cancel and undo print: the summary line, then where the rows come from."""
    text = f"{summary(job)}\nsource: {source_line(job_source(job))}"
    upload = job_upload(job)
    if upload is not None:
        text += f"\nupload: {ascii(upload['filename'])[1:-1]} ({upload['id']})"
    return text


def source_line(source: dict[str, str | None]) -> str:
    """A job's source as words, its unknowns left out: `s3, gzip, csv, member data/users.csv`."""
    member = source["member"]
    if member is not None and not member.isprintable():  # a name from the archive: no escapes to the terminal
        member = ascii(member)
    parts = [source["scheme"], source["compression"], source["format"], member and f"member {member}"]
    return ", ".join(part for part in parts if part)


if __name__ == "__main__":
    sys.exit(main())
