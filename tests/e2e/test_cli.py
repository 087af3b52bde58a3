"""The real `importctl` binary against a real Postgres: commands, output and exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.jobs import migrate
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


def test_unknown_job_exits_1(cli: Cli) -> None:
    result = cli.run("status", "00000000-0000-0000-0000-000000000000")
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
        assert last.startswith("succeeded rows=3/3 valid=2 invalid=1 inserted=2")
        assert "\r" not in watched.stdout
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
