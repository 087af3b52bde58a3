"""`importctl feed ...` (SPEC 20): the real binary against a real app DB and real workers. A feed
made on the command line imports each file of a folder of acme's area once; show and list print
it, pause, resume and update change it, files pages through its files, a failed file is retried,
delete removes it; a refused request is one line naming the field (exit 2), an unknown feed, a
run that stops early or a retry of a file that did not fail exits 1."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import query, until
from tests.e2e.conftest import Stack
from tests.integration.conftest import start_workers, stop_workers

IMPORTCTL = shutil.which("importctl", path=str(Path(sys.executable).parent)) or "importctl"
PAST = time.time() - 60  # files older than a feed's settle time


@dataclass
class Cli:
    stack: Stack

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [IMPORTCTL, *args], env=self.stack.env, capture_output=True, text=True, timeout=120, cwd=self.stack.tmp
        )

    def folder(self, name: str) -> tuple[Path, str]:
        """A new folder of acme's area and its URI as a feed's prefix."""
        path = self.stack.blob_root / "acme" / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path, path.as_uri() + "/"

    def create(self, prefix: str, *args: str) -> str:
        """A paused feed of acme's users on this prefix (the workers leave it alone; `feed run` runs it)."""
        made = self.run("feed", "create", "--customer=acme", "--product=users", f"--prefix={prefix}", "--paused", *args)
        assert made.returncode == 0, made.stderr
        feed_id = made.stdout.strip()
        assert str(uuid.UUID(feed_id)) == feed_id and made.stderr == ""
        return feed_id

    def view(self, feed_id: str) -> dict[str, Any]:
        shown = self.run("feed", "show", feed_id, "--json")
        assert shown.returncode == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    def settled(self, feed_id: str, seen: int) -> dict[str, Any]:
        """The feed's view once it has seen `seen` files and none of their jobs is queued or running."""
        until(lambda: (files := self.view(feed_id)["files"])["seen"] == seen and files["pending"] == 0, timeout=120)
        return self.view(feed_id)


def put(folder: Path, name: str, content: str = "external_id,email\nu1,a@example.com\nu2,b@example.com\n") -> Path:
    """A file written long enough ago for a run to take it."""
    path = folder / name
    path.write_text(content)
    os.utime(path, (PAST, PAST))
    return path


@pytest.fixture(scope="module")
def cli(stack: Stack) -> Cli:
    return Cli(stack)


def test_a_feed_made_on_the_command_line_imports_each_file_once_and_show_and_list_print_it(cli: Cli) -> None:
    incoming, prefix = cli.folder("nightly")
    put(incoming, "b.csv")
    put(incoming, "a.csv")
    put(incoming, "notes.txt")  # not matched by the pattern
    feed_id = cli.create(prefix, "--every=3600", "--pattern=*.csv", "--option=mode=upsert", "--expect-every-hours=24")
    ran = cli.run("feed", "run", feed_id)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "found=2 enqueued=2\n", "")
    view = cli.settled(feed_id, 2)
    assert view["files"] == {"seen": 2, "imported": 2, "failed": 0, "pending": 0}
    assert (view["prefix_uri"], view["pattern"], view["options"]) == (prefix, "*.csv", {"mode": "upsert"})
    assert (view["schedule"], view["paused"], view["expect_every_hours"]) == ({"every_seconds": 3600}, True, 24.0)
    for file in view["recent"]:
        job = json.loads(cli.run("status", file["job_id"], "--json").stdout)
        assert (job["status"], job["blob_uri"], job["options"]["mode"]) == ("succeeded", file["key"], "upsert")

    shown = cli.run("feed", "show", feed_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:4] == [
        f"{feed_id}  acme/users  paused  {prefix}*.csv",
        "schedule: every 3600 s; paused",
        "options: mode=upsert",
        "after success: keep",
    ]
    assert lines[4].startswith("expects a new file every 24 h (last new file: 20"), lines[4]
    assert lines[5].startswith("last run: 20") and lines[5].endswith("  found=2 enqueued=2"), lines[5]
    assert lines[6] == "files: seen=2 imported=2 failed=0 pending=0"
    files = {file["key"].rsplit("/", 1)[1]: file for file in view["recent"]}
    assert sorted(lines[7:]) == sorted(
        f"  {file['version']}  {file['job_id']}  succeeded  {name}" for name, file in files.items()
    )

    again = cli.run("feed", "run", feed_id)
    assert (again.returncode, again.stdout) == (0, "found=2 enqueued=0\n")  # each version once
    listed = cli.run("feed", "list", "--customer=acme")
    assert listed.returncode == 0 and lines[0] in listed.stdout.splitlines()
    assert lines[0] in cli.run("feed", "list").stdout.splitlines()
    assert cli.run("feed", "list", "--customer=globex").stdout == ""
    every = json.loads(cli.run("feed", "list", "--json").stdout)["feeds"]
    assert feed_id in [feed["feed_id"] for feed in every]


def test_pause_and_resume_print_the_feed_and_set_or_clear_its_next_run(cli: Cli) -> None:
    _, prefix = cli.folder("nightly-cron")
    feed_id = cli.create(prefix, "--cron=0 2 * * *", "--after-success=delete")
    resumed = cli.run("feed", "resume", feed_id)
    assert (resumed.returncode, resumed.stdout) == (0, f"{feed_id}  acme/users  active  {prefix}*\n")
    view = cli.view(feed_id)
    assert view["paused"] is False and view["next_run_at"].endswith("T02:00:00+00:00")
    shown = cli.run("feed", "show", feed_id).stdout.splitlines()
    assert shown[1] == f"schedule: cron 0 2 * * * (UTC); next run {view['next_run_at']}"
    assert shown[2:5] == ["after success: delete", "last run: never", "files: seen=0 imported=0 failed=0 pending=0"]
    paused = cli.run("feed", "pause", feed_id)
    assert (paused.returncode, paused.stdout) == (0, f"{feed_id}  acme/users  paused  {prefix}*\n")
    assert cli.view(feed_id)["next_run_at"] is None


def test_a_failed_or_cancelled_file_stays_so_until_feed_retry_imports_it_again(cli: Cli) -> None:
    incoming, prefix = cli.folder("retry")
    put(incoming, "empty.csv", "")  # fails its job
    put(incoming, "good.csv")  # its job is cancelled while queued
    feed_id = cli.create(prefix, "--every=60")
    for pool in cli.stack.pools:  # no worker takes the jobs until the cancel
        stop_workers(pool)
    cli.stack.pools.clear()
    try:
        assert cli.run("feed", "run", feed_id).stdout == "found=2 enqueued=2\n"
        files = {file["key"].rsplit("/", 1)[1]: file for file in cli.view(feed_id)["recent"]}
        assert cli.run("cancel", files["good.csv"]["job_id"]).returncode == 0
    finally:
        cli.stack.pools.append(start_workers(cli.stack.env))
    view = cli.settled(feed_id, 2)
    assert view["files"] == {"seen": 2, "imported": 0, "failed": 2, "pending": 0}
    shown = cli.run("feed", "show", feed_id).stdout.splitlines()
    for name, status in (("empty.csv", "failed   "), ("good.csv", "cancelled")):
        assert f"  {files[name]['version']}  {files[name]['job_id']}  {status}  {name}" in shown, shown

    unknown = cli.run("feed", "retry", feed_id, "0" * 32)
    assert unknown.returncode == 1 and unknown.stderr == f"importctl: feed {feed_id} has no file {'0' * 32}\n"
    retried = cli.run("feed", "retry", feed_id, files["good.csv"]["version"])
    assert retried.returncode == 0, retried.stderr
    job_id = retried.stdout.strip()
    assert job_id != files["good.csv"]["job_id"]
    until(lambda: cli.view(feed_id)["files"] == {"seen": 2, "imported": 1, "failed": 1, "pending": 0}, timeout=120)
    assert json.loads(cli.run("status", job_id, "--json").stdout)["status"] == "succeeded"
    twice = cli.run("feed", "retry", feed_id, files["good.csv"]["version"])  # as a replay the job's state refuses
    assert (twice.returncode, twice.stdout) == (1, "")
    assert twice.stderr == f"importctl: the file's job {job_id} is succeeded; only a failed file is retried\n"


def test_feed_files_prints_every_file_a_page_at_a_time_and_the_command_for_the_next_page(cli: Cli) -> None:
    incoming, prefix = cli.folder("paged")
    names = [f"{number:02}.csv" for number in range(5)]
    for name in names:
        put(incoming, name)
    put(incoming, "empty.csv", "")  # fails its job
    feed_id = cli.create(prefix, "--every=3600")
    assert cli.run("feed", "run", feed_id).stdout == "found=6 enqueued=6\n"
    view = cli.settled(feed_id, 6)
    lines = {
        file["key"].rsplit("/", 1)[1]: f"{file['version']}  {file['job_id']}  {file['status']:<9}  "
        + file["key"].rsplit("/", 1)[1]
        for file in view["recent"]
    }

    pages, args = [], ["feed", "files", feed_id, "--limit=4"]
    while True:
        page = cli.run(*args)
        assert page.returncode == 0, page.stderr
        pages.append(page.stdout.splitlines())
        if not page.stderr:
            break
        said = page.stderr.removeprefix("importctl: more files: ")
        assert said != page.stderr and said.endswith("\n") and said.count("\n") == 1, page.stderr
        args = shlex.split(said)[1:]  # the command it names, as a shell would split it
        assert args[:4] == ["feed", "files", feed_id, "--limit=4"] and args[4].startswith("--after="), args
    # One run's files in reverse name order, each once, four to a page, each line as `feed show` indents it.
    order = ["empty.csv", *reversed(names)]
    assert pages == [[lines[name] for name in order[:4]], [lines[name] for name in order[4:]]]
    assert [f"  {line}" for line in pages[0]] == cli.run("feed", "show", feed_id).stdout.splitlines()[-6:-2]

    failed = cli.run("feed", "files", feed_id, "--state=failed")
    assert (failed.returncode, failed.stdout, failed.stderr) == (0, lines["empty.csv"] + "\n", "")
    assert lines["empty.csv"].split()[2] == "failed"
    imported = cli.run("feed", "files", feed_id, "--state=imported", "--limit=3")
    assert imported.stdout.splitlines() == [lines[name] for name in order[1:4]]
    assert imported.stderr.startswith(
        f"importctl: more files: importctl feed files {feed_id} --state=imported --limit=3 --after="
    )
    assert cli.run("feed", "files", feed_id, "--state=pending").stdout == ""
    answer = json.loads(cli.run("feed", "files", feed_id, "--limit=6", "--json").stdout)
    assert answer == {"files": view["recent"], "next": None}  # GET /feeds/<id>/files's answer
    paged = json.loads(cli.run("feed", "files", feed_id, "--limit=1", "--json").stdout)
    assert (paged["files"], paged["next"]) == (view["recent"][:1], view["recent"][0]["version"])

    for bad, field in (("--state=done", "state"), ("--limit=0", "limit"), (f"--after={'0' * 32}", "after")):
        refused = cli.run("feed", "files", feed_id, bad)
        assert (refused.returncode, refused.stdout) == (2, ""), refused
        assert refused.stderr.startswith(f"importctl: refused ({field}): ") and refused.stderr.count("\n") == 1
    unknown = str(uuid.uuid4())
    gone = cli.run("feed", "files", unknown)
    assert (gone.returncode, gone.stdout, gone.stderr) == (1, "", f"importctl: no feed {unknown}\n")


def test_feed_update_changes_only_what_it_is_given_and_options_replace_the_feeds(cli: Cli) -> None:
    _, prefix = cli.folder("updated")
    feed_id = cli.create(prefix, "--every=3600", "--pattern=*.csv", "--option=mode=upsert", "--option=dry_run=true")
    updated = cli.run("feed", "update", feed_id, "--cron=0 2 * * *")
    assert updated.returncode == 0 and updated.stderr == "", updated.stderr
    assert updated.stdout.splitlines() == [
        f"{feed_id}  acme/users  paused  {prefix}*.csv",
        "schedule: cron 0 2 * * * (UTC); paused",
        "options: mode=upsert dry_run=true",
        "after success: keep",
        "last run: never",
    ]
    view = cli.view(feed_id)
    assert (view["schedule"], view["pattern"], view["options"]) == (
        {"cron": "0 2 * * *"},
        "*.csv",
        {"mode": "upsert", "dry_run": True},
    )
    assert (view["after_success"], view["expect_every_hours"], view["paused"]) == ("keep", None, True)

    given = ["--every=600", "--option=mode=append", "--pattern=*.tsv", "--after-success=delete"]
    changed = cli.run("feed", "update", feed_id, *given, "--expect-every-hours=12")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines()[1:5] == [
        "schedule: every 600 s; paused",
        "options: mode=append",  # the options given are the feed's options now: dry_run is gone
        "after success: delete",
        "expects a new file every 12 h (last new file: never)",
    ]
    view = cli.view(feed_id)
    assert (view["schedule"], view["pattern"], view["options"]) == ({"every_seconds": 600}, "*.tsv", {"mode": "append"})
    assert (view["after_success"], view["expect_every_hours"], view["paused"]) == ("delete", 12.0, True)

    for args, field in (
        (["--every=5"], "schedule.every_seconds"),
        (["--cron=every night"], "schedule.cron"),
        (["--option=mode=merge"], "options.mode"),
        (["--after-success=archive"], "after_success"),
        (["--after-success=move_to:file:///etc/"], "after_success.move_to"),
        (["--expect-every-hours=soon"], "expect_every_hours"),
        (["--pattern="], "pattern"),
    ):
        refused = cli.run("feed", "update", feed_id, *args)
        assert (refused.returncode, refused.stdout) == (2, ""), refused
        assert refused.stderr.startswith(f"importctl: refused ({field}): ") and refused.stderr.count("\n") == 1, args
    nothing = cli.run("feed", "update", feed_id)
    assert (nothing.returncode, nothing.stdout) == (2, "") and nothing.stderr.startswith("importctl: refused: give")
    both = cli.run("feed", "update", feed_id, "--every=60", "--cron=* * * * *")
    assert both.returncode == 2 and "Usage" in both.stderr and "Traceback" not in both.stderr
    assert cli.view(feed_id) == view  # nothing refused changed it
    unknown = str(uuid.uuid4())
    gone = cli.run("feed", "update", unknown, "--every=60")
    assert (gone.returncode, gone.stdout, gone.stderr) == (1, "", f"importctl: no feed {unknown}\n")


def test_an_imported_file_is_moved_and_delete_removes_the_feed_but_keeps_its_jobs_and_files(cli: Cli) -> None:
    incoming, prefix = cli.folder("deleted")
    put(incoming, "one.csv")
    done, _ = cli.folder("done")
    feed_id = cli.create(prefix, "--every=60", f"--after-success=move_to:{done.as_uri()}")
    assert cli.run("feed", "show", feed_id).stdout.splitlines()[2] == f"after success: move to {done.as_uri()}/"
    assert cli.run("feed", "run", feed_id).returncode == 0
    (file,) = cli.settled(feed_id, 1)["recent"]
    until(lambda: (done / "one.csv").exists(), timeout=30, interval=0.2)  # the workers move it once imported
    assert not (incoming / "one.csv").exists()
    deleted = cli.run("feed", "delete", feed_id)
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, f"deleted feed {feed_id}\n", "")
    assert json.loads(cli.run("status", file["job_id"], "--json").stdout)["status"] == "succeeded"
    assert (done / "one.csv").exists()
    for command in (["show"], ["pause"], ["resume"], ["run"], ["files"], ["delete"], ["retry"]):
        extra = [file["version"]] if command == ["retry"] else []
        gone = cli.run("feed", *command, feed_id, *extra)
        assert (gone.returncode, gone.stdout, gone.stderr) == (1, "", f"importctl: no feed {feed_id}\n"), command


def test_a_run_that_cannot_list_its_folder_exits_1_and_says_why(cli: Cli) -> None:
    incoming, prefix = cli.folder("escaped")
    feed_id = cli.create(prefix, "--every=60")
    incoming.rmdir()
    incoming.symlink_to(cli.stack.blob_root / "globex")  # the folder now leads out of acme's area
    ran = cli.run("feed", "run", feed_id)
    assert (ran.returncode, ran.stdout) == (1, "found=0 enqueued=0\n")
    assert ran.stderr.endswith(
        f"importctl: the run of feed {feed_id} stopped: prefix_uri is outside the blob area of customer 'acme'\n"
    ), ran.stderr
    assert "Traceback" not in ran.stderr
    assert cli.view(feed_id)["last_run"]["error"] == "prefix_uri is outside the blob area of customer 'acme'"


CREATE = {"--customer": "acme", "--product": "users", "--prefix": "{acme}", "--every": "3600"}


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"--prefix": "file:///etc/"}, "prefix_uri"),
        ({"--prefix": "{globex}"}, "prefix_uri"),
        ({"--prefix": "{acme}../../globex/"}, "prefix_uri"),
        ({"--prefix": "https://example.com/files/"}, "prefix_uri"),
        ({"--prefix": "s3://bucket/acme/"}, "prefix_uri"),
        ({"--every": None, "--cron": "every night"}, "schedule.cron"),
        ({"--every": None, "--cron": "61 * * * *"}, "schedule.cron"),
        ({"--every": "5"}, "schedule.every_seconds"),
        ({"--every": "hourly"}, "schedule.every_seconds"),
        ({"--after-success": "archive"}, "after_success"),
        ({"--after-success": "move_to:"}, "after_success"),
        ({"--after-success": "move_to:{acme}done/"}, "after_success.move_to"),
        ({"--after-success": "move_to:{globex}"}, "after_success.move_to"),
        ({"--expect-every-hours": "-1"}, "expect_every_hours"),
        ({"--expect-every-hours": "soon"}, "expect_every_hours"),
        ({"--option": "mode=merge"}, "options.mode"),
        ({"--option": "dry_run=maybe"}, "options.dry_run"),
        ({"--option": "colour=red"}, "options.colour"),
        ({"--pattern": ""}, "pattern"),
        ({"--customer": "nobody"}, "customer_id"),
        ({"--product": "nope"}, "product_type"),
    ],
)
def test_a_refused_feed_is_one_line_naming_the_field_and_exit_2(
    cli: Cli, changes: dict[str, str | None], field: str
) -> None:
    _, acme = cli.folder("refused")
    globex = (cli.stack.blob_root / "globex").as_uri() + "/"
    options = {**CREATE, **changes}
    args = [f"{name}={value.format(acme=acme, globex=globex)}" for name, value in options.items() if value is not None]
    feeds = "SELECT count(*) FROM import_feeds"
    before = query(cli.stack.app_dsn, feeds)
    result = cli.run("feed", "create", *args)
    assert result.returncode == 2 and result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"importctl: refused ({field}): "), result.stderr
    assert query(cli.stack.app_dsn, feeds) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["feed", "create", "--customer=acme", "--product=users", "--prefix=file:///x/"], "Usage"),
        (
            [
                "feed",
                "create",
                "--customer=acme",
                "--product=users",
                "--prefix=file:///x/",
                "--every=60",
                "--cron=* * * * *",
            ],
            "Usage",
        ),
        (["feed", "retry", "00000000-0000-0000-0000-000000000000"], "Usage"),
        (["feed", "show"], "Usage"),
        (["feed", "list", "--limit=0"], "importctl: refused (limit): limit must be a whole number from 1 to 1000"),
    ],
)
def test_feed_usage_errors_exit_2_with_no_traceback(cli: Cli, args: list[str], message: str) -> None:
    result = cli.run(*args)
    assert result.returncode == 2 and message in result.stderr, result
    assert "Traceback" not in result.stderr
