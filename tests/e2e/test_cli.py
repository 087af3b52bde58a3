"""The real `importctl` binary against a real Postgres: commands, output and exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.storage.jobs import migrate
from tests.conftest import ROOT, Databases, query
from tests.integration.conftest import pipeline_env, start_workers, stop_workers

IMPORTCTL = shutil.which("importctl", path=str(Path(sys.executable).parent)) or "importctl"
USERS = "external_id,email,age\nu1,a@example.com,30\nu2,broken,31\nu3,c@example.com,\n"


@dataclass
class Cli:
    env: dict[str, str]
    app_dsn: str
    customer_dsn: str
    blob_root: Path
    tmp: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [IMPORTCTL, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout, cwd=self.tmp
        )

    def file(self, name: str, content: str) -> Path:
        path = self.tmp / name
        path.write_text(content)
        return path


@pytest.fixture(scope="module")
def cli(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    app, customer = databases.create("app"), databases.create("acme")
    tmp = tmp_path_factory.mktemp("cli")
    root = tmp / "blobs"
    (root / "acme").mkdir(parents=True)
    map_path = tmp / "customer_map.json"
    map_path.write_text(json.dumps({"acme": customer}))
    migrate(app)
    yield Cli(pipeline_env(app, map_path, root, WORKER_CONCURRENCY="2"), app, customer, root, tmp)


def test_migrate_is_rerunnable_and_exits_0(cli: Cli) -> None:
    result = cli.run("migrate")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_import_copies_the_file_runs_the_job_and_prints_the_summary(cli: Cli) -> None:
    result = cli.run("import", "--customer=acme", "--product=users", f"--file={cli.file('users.csv', USERS)}")
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout and "total=3 valid=2 invalid=1 inserted=2" in result.stdout
    job_id = result.stdout.split()[0]
    assert query(cli.customer_dsn, "SELECT count(*) FROM users WHERE job_id = %s", (job_id,)) == [(2,)]
    assert list((cli.blob_root / "acme" / "uploads").glob("*-users.csv"))


def test_import_of_a_failing_file_exits_1_and_says_why(cli: Cli) -> None:
    path = cli.file("noemail.csv", "external_id,name\nu1,x\n")
    result = cli.run("import", "--customer=acme", "--product=users", f"--file={path}")
    assert result.returncode == 1
    assert "failed" in result.stdout and "email" in result.stdout


def test_status_and_logs_print_a_queued_job_and_exit_0(cli: Cli) -> None:
    path = cli.blob_root / "acme" / "later.csv"
    path.write_text(USERS)
    enqueued = cli.run(
        "enqueue", "--customer=acme", "--product=users", f"--uri={path.as_uri()}", "--option=dry_run=true"
    )
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    status = cli.run("status", job_id, "--json")
    assert status.returncode == 0
    document = json.loads(status.stdout)
    assert document["job_id"] == job_id and document["status"] == "queued"
    assert document["options"] == {"dry_run": True}
    logs = cli.run("logs", job_id)
    assert logs.returncode == 0 and logs.stdout == ""


def test_enqueue_wait_with_real_workers_exits_0_on_success_and_1_on_failure(cli: Cli) -> None:
    workers = start_workers(cli.env)
    try:
        good = cli.run("enqueue", "--customer=acme", "--product=users", f"--file={cli.file('w.csv', USERS)}", "--wait")
        assert good.returncode == 0, good.stderr
        invalid = cli.file("w.csv", "external_id,email\nu1,not-an-email\n")
        bad = cli.run(
            "enqueue", "--customer=acme", "--product=users", f"--file={invalid}", "--wait", "--option=on_invalid=fail"
        )
        assert bad.returncode == 1, bad.stderr
        assert "failed" in bad.stderr
    finally:
        stop_workers(workers)


def test_status_of_a_plain_file_job_run_by_real_workers_prints_its_source_line_and_json(cli: Cli) -> None:
    workers = start_workers(cli.env)
    try:
        done = cli.run("enqueue", "--customer=acme", "--product=users", f"--file={cli.file('s.csv', USERS)}", "--wait")
        assert done.returncode == 0, done.stderr
    finally:
        stop_workers(workers)
    job_id = done.stdout.split()[0]
    plain = cli.run("status", job_id)
    assert plain.returncode == 0, plain.stderr
    summary, source = plain.stdout.splitlines()
    assert summary.startswith(job_id) and " succeeded " in summary
    assert source == "source: file, csv"
    view = json.loads(cli.run("status", job_id, "--json").stdout)
    assert view["source"] == {"scheme": "file", "compression": None, "format": "csv", "member": None}


def test_the_source_line_names_what_is_known_and_escapes_a_members_control_characters() -> None:
    from service.edges.cli.main import source_line

    full = {"scheme": "s3", "compression": "gzip", "format": "csv", "member": "data/users.csv"}
    assert source_line(full) == "s3, gzip, csv, member data/users.csv"
    assert source_line({"scheme": "file", "compression": None, "format": None, "member": None}) == "file"
    hostile = source_line({**full, "member": "a\x1b[2Jb.csv\n"})
    assert "\x1b" not in hostile and "\n" not in hostile and hostile.endswith("member 'a\\x1b[2Jb.csv\\n'")


def test_status_of_a_queued_job_prints_its_format_option_as_its_source_format(cli: Cli) -> None:
    path = cli.blob_root / "acme" / f"courses-{uuid.uuid4().hex[:8]}.txt"
    path.write_text("external_id=C-1 title=Intro organization_id=ORG-1\n")
    enqueued = cli.run(
        "enqueue", "--customer=acme", "--product=courses", f"--uri={path.as_uri()}", "--option=format=kv"
    )
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()  # no worker runs in this test: the job stays queued
    assert cli.run("status", job_id).stdout.splitlines()[1:] == ["source: file, kv"]
    assert json.loads(cli.run("status", job_id, "--json").stdout)["source"]["format"] == "kv"


def test_option_sheet_twice_imports_both_sheets_as_one_job_and_logs_say_which_rows_each_gave(cli: Cli) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Cover"
    book.active.append(["Quarterly users"])
    for title, rows in {
        "Q1": [["q1a", "a@example.com", 30]],
        "Q2": [["q2a", "b@example.com", 41], ["q2b", "x", 7]],
    }.items():
        sheet = book.create_sheet(title)
        sheet.append(["external_id", "email", "age"])
        for row in rows:
            sheet.append(row)
    path = cli.tmp / "quarters.xlsx"
    book.save(path)
    workers = start_workers(cli.env)
    try:
        args = ["enqueue", "--customer=acme", "--product=users", f"--file={path}", "--wait"]
        done = cli.run(*args, "--option=sheet=Q1", "--option=sheet=Q2")
        assert done.returncode == 0, done.stderr
        job = json.loads(cli.run("status", done.stdout.split()[0], "--json").stdout)
        assert job["options"] == {"sheet": ["Q1", "Q2"]}
        assert (job["rows_total"], job["rows_valid"], job["rows_inserted"]) == (3, 2, 2)
        logs = cli.run("logs", job["job_id"])
        assert "sheet 'Q1': rows 1-1 of the job (its rows 2-2)" in logs.stdout
        assert "sheet 'Q2': rows 2-3 of the job (its rows 2-3)" in logs.stdout
        rows = query(
            cli.customer_dsn,
            "SELECT data->>'external_id' FROM users WHERE job_id = %s ORDER BY source_row",
            (job["job_id"],),
        )
        assert rows == [("q1a",), ("q2a",)]
        missing = cli.run(*args, "--option=sheet=Q1", "--option=sheet=Q9")
        assert missing.returncode == 1
        assert "the workbook has no sheet 'Q9'; its sheets are 'Cover', 'Q1', 'Q2'" in missing.stdout + missing.stderr
    finally:
        stop_workers(workers)


@pytest.mark.parametrize("command", ["status", "cancel", "undo", "rejects", "replay"])
def test_unknown_job_exits_1(cli: Cli, command: str) -> None:
    result = cli.run(command, "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1
    assert "no job" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["bogus"], "Usage"),
        (["import", "--customer=acme"], "Usage"),
        (["enqueue", "--customer=nobody", "--product=users", "--uri=file:///x.csv"], "unknown customer"),
        (["enqueue", "--customer=acme", "--product=nope", "--uri=file:///x.csv"], "nope"),
        (["enqueue", "--customer=acme", "--product=users", "--uri=file:///etc/passwd"], "outside the blob area"),
        (["enqueue", "--customer=acme", "--product=users", "--uri=s3://b/k.csv"], "scheme"),
        (
            ["enqueue", "--customer=acme", "--product=users", "--uri=file:///x.csv", "--option=colour=red"],
            "unknown option",
        ),
        (
            ["enqueue", "--customer=acme", "--product=users", "--uri=file:///x.csv", "--option=mode=merge"],
            "options.mode",
        ),
        (
            [
                "enqueue",
                "--customer=acme",
                "--product=users",
                "--uri=file:///x.csv",
                "--option=mode=upsert",
                "--option=atomic=false",
            ],
            "options.atomic",
        ),
        (
            ["import", "--customer=acme", "--product=users", "--uri=file:///x.csv", "--option=allow_empty=true"],
            "options.allow_empty",
        ),
        (
            ["enqueue", "--customer=acme", "--product=users", "--uri=file:///x.csv", "--option=atomic=maybe"],
            "options.atomic",
        ),
        (["cancel"], "Usage"),
        (["undo", "a", "b"], "Usage"),
        (["rejects"], "Usage"),
        (["replay"], "Usage"),
        (["replay", "a", "--output=x.csv"], "Usage"),
        (["rejects", "a", "--output"], "--output requires argument"),
    ],
)
def test_usage_and_refused_requests_exit_2_with_one_clear_line(cli: Cli, args: list[str], message: str) -> None:
    result = cli.run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content, section, message",
    [
        ("{not json", "default", "malformed JSON at line 1"),
        ('{"default": {}}', "staging", "unknown config section 'staging'"),
        ('{"default": {"max_logged_errors": "many"}}', "default", "max_logged_errors must be a whole number"),
        ('{"default": {"customer_map_path": "bad_map.json"}}', "default", "is not a valid Postgres DSN"),
        ('{"default": {"customer_map_path": "missing.json"}}', "default", "cannot read the file"),
    ],
)
def test_a_bad_config_stops_with_one_line_naming_the_file(cli: Cli, content: str, section: str, message: str) -> None:
    (cli.tmp / "bad_map.json").write_text('{"acme": "this is not a dsn"}')
    config = cli.file("config.json", content)
    env = {k: v for k, v in cli.env.items() if k != "CUSTOMER_MAP_PATH"}
    env.update(CONFIG_PATH=str(config), CONFIG_ENV=section)
    result = cli.run("status", "00000000-0000-0000-0000-000000000000", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert str(cli.tmp) in lines[0]


@pytest.mark.parametrize("command", [["migrate"], ["status", "00000000-0000-0000-0000-000000000000"]])
def test_an_unreachable_app_database_is_one_line_without_traceback_or_password(cli: Cli, command: list[str]) -> None:
    from tests.e2e.conftest import free_port

    env = dict(cli.env, APP_DB_DSN=f"postgresql://importer:pw-SECRET-1@127.0.0.1:{free_port()}/nowhere")
    result = cli.run(*command, env=env)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("importctl: cannot use the app database: "), result.stderr
    assert "Traceback" not in result.stderr and "pw-SECRET-1" not in result.stderr + result.stdout


def test_python_dash_m_service_cli_is_the_same_command(cli: Cli) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"], env=cli.env, capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_worker_command_runs_jobs_and_stops_cleanly_on_sigterm(cli: Cli) -> None:
    process = subprocess.Popen(
        [IMPORTCTL, "worker", "--processes=1", "--threads=2"], env=cli.env, start_new_session=True
    )
    try:
        path = cli.blob_root / "acme" / "by-worker.csv"
        path.write_text(USERS)
        enqueued = cli.run("enqueue", "--customer=acme", "--product=users", f"--uri={path.as_uri()}")
        job_id = enqueued.stdout.strip()
        deadline = time.monotonic() + 60
        status = {}
        while time.monotonic() < deadline:
            status = json.loads(cli.run("status", job_id, "--json").stdout)
            if status["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.3)
        assert status["status"] == "succeeded"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=40) == 0


def test_watch_prints_plain_lines_when_piped_and_exits_by_the_jobs_outcome(cli: Cli) -> None:
    workers = start_workers(cli.env)
    try:
        good = cli.run("enqueue", "--customer=acme", "--product=users", f"--file={cli.file('v.csv', USERS)}")
        watched = cli.run("watch", good.stdout.strip())
        assert watched.returncode == 0, watched.stderr
        last = watched.stdout.strip().splitlines()[-1]
        assert last == "succeeded rows=3/3 valid=2 invalid=1 inserted=2 updated=0 unchanged=0 duplicate=0 deleted=0"
        assert "\r" not in watched.stdout
        assert cli.run("undo", good.stdout.strip()).returncode == 0
        undone = cli.run("watch", good.stdout.strip())
        assert undone.returncode == 0 and undone.stdout.startswith("undone "), undone.stdout
        no_email = cli.file("v2.csv", "id\nx\n")
        bad = cli.run("enqueue", "--customer=acme", "--product=users", f"--file={no_email}")
        failed = cli.run("watch", bad.stdout.strip())
        assert failed.returncode == 1
        assert "failed" in failed.stdout.splitlines()[-1] and "email" in failed.stdout
    finally:
        stop_workers(workers)


def test_watch_draws_a_live_bar_on_a_terminal(cli: Cli) -> None:
    import pty

    workers = start_workers(cli.env)
    try:
        job_id = cli.run(
            "enqueue", "--customer=acme", "--product=users", f"--file={cli.file('t.csv', USERS)}"
        ).stdout.strip()
        pid, fd = pty.fork()
        if pid == 0:  # the child runs the real binary on a terminal
            os.execve(IMPORTCTL, [IMPORTCTL, "watch", job_id], cli.env)
        output = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        text = output.decode()
        assert "\r[" in text and "rows/s" in text and "3/3 rows" in text and "succeeded" in text
    finally:
        stop_workers(workers)


# -- write modes, cancel and undo (SPEC 12-13) -------------------------------------------------

COUNTS = "total=4 valid=3 invalid=1 inserted=2 updated=0 unchanged=0 duplicate=1 deleted=0"


def organizations_file(cli: Cli) -> tuple[Path, str]:
    """A fresh organizations file and the prefix of its keys.

    Rows 1 and 3 valid, row 2 invalid (no name), row 4 repeats row 1's key.
    """
    prefix = f"org-{uuid.uuid4().hex[:8]}-"
    rows = [f"{prefix}1,One,FR", f"{prefix}2,,FR", f"{prefix}3,Three,DE", f"{prefix}1,Uno,IT"]
    return cli.file(f"{prefix}orgs.csv", "external_id,name,country\n" + "\n".join(rows) + "\n"), prefix


def held_rows(cli: Cli, prefix: str) -> int:
    """How many organizations rows have a key starting with prefix."""
    statement = "SELECT count(*) FROM organizations WHERE data->>'external_id' LIKE %s"
    return int(query(cli.customer_dsn, statement, (f"{prefix}%",))[0][0])


def imported_upsert(cli: Cli) -> tuple[str, str]:
    """Import a fresh organizations file in mode upsert; (job id, key prefix)."""
    path, prefix = organizations_file(cli)
    result = cli.run("import", "--customer=acme", "--product=organizations", f"--file={path}", "--option=mode=upsert")
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout and COUNTS in result.stdout, result.stdout
    return result.stdout.split()[0], prefix


def test_an_upsert_import_prints_every_count_and_status_shows_them(cli: Cli) -> None:
    job_id, prefix = imported_upsert(cli)
    assert held_rows(cli, prefix) == 2
    view = json.loads(cli.run("status", job_id, "--json").stdout)
    assert view["options"] == {"mode": "upsert"} and view["undone_at"] is None
    counts = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_duplicate", "rows_deleted")
    assert [view[name] for name in counts] == [2, 0, 0, 1, 0]
    plain = cli.run("status", job_id)
    assert plain.returncode == 0 and COUNTS in plain.stdout and "undone_at" not in plain.stdout


def test_undo_of_a_succeeded_upsert_prints_it_undone_and_again_the_same(cli: Cli) -> None:
    job_id, prefix = imported_upsert(cli)
    undone = cli.run("undo", job_id)
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout.startswith(job_id) and " undone " in undone.stdout and "undone_at=" in undone.stdout
    assert undone.stderr == ""  # complete at once: no word of a worker finishing it
    assert held_rows(cli, prefix) == 0
    again = cli.run("undo", job_id)
    assert (again.returncode, again.stdout) == (0, undone.stdout)
    assert cli.run("status", job_id).stdout == undone.stdout
    assert json.loads(cli.run("status", job_id, "--json").stdout)["undone_at"] is not None


def test_undo_of_a_failed_job_exits_1_and_says_why(cli: Cli) -> None:
    path, _ = organizations_file(cli)
    result = cli.run(
        "import", "--customer=acme", "--product=organizations", f"--file={path}", "--option=on_invalid=fail"
    )
    assert result.returncode == 1 and "failed" in result.stdout
    undo = cli.run("undo", result.stdout.split()[0])
    assert undo.returncode == 1
    assert "failed" in undo.stderr and "Traceback" not in undo.stderr and undo.stdout == ""


def test_cancel_of_a_succeeded_job_exits_1_and_says_why(cli: Cli) -> None:
    job_id, _ = imported_upsert(cli)
    cancel = cli.run("cancel", job_id)
    assert cancel.returncode == 1
    assert "succeeded" in cancel.stderr and "Traceback" not in cancel.stderr
    assert json.loads(cli.run("status", job_id, "--json").stdout)["status"] == "succeeded"


def test_cancel_of_a_queued_job_exits_0_and_cancelling_it_again_prints_it_cancelled_twice(cli: Cli) -> None:
    path = cli.blob_root / "acme" / f"to-cancel-{uuid.uuid4().hex[:8]}.csv"
    path.write_text(USERS)
    enqueued = cli.run("enqueue", "--customer=acme", "--product=courses", f"--uri={path.as_uri()}")
    job_id = enqueued.stdout.strip()  # no worker runs in this test: the job stays queued
    first = cli.run("cancel", job_id)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(job_id)
    deadline = time.monotonic() + 10  # SPEC 13: a cancelled job ends within 10 s
    while (view := json.loads(cli.run("status", job_id, "--json").stdout))["status"] != "cancelled":
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    again = [cli.run("cancel", job_id) for _ in range(2)]
    assert [(result.returncode, result.stderr) for result in again] == [(0, ""), (0, "")]
    assert again[0].stdout == again[1].stdout and " cancelled " in again[0].stdout
