"""The docs run as written: every command in README.md and docs/*.md, against a real stack.

A fenced block marked `sh` runs; each doc's `sh` blocks (and its `python run` blocks, fed to
the virtualenv's Python) run in order in one bash process (`set -euo pipefail`, so a variable
set in one block is there in the next), from a copy of the repository root whose `sample/` is
the blob root, with the virtualenv on PATH, against what `make serve` runs: gunicorn on
127.0.0.1:8080, the gRPC server on 127.0.0.1:9090, `dramatiq actors`, the dev tokens of
api_tokens.json, and fresh app and customer databases. A block marked `sh norun` (`make run`,
`make serve`, `make bench`, Docker) is checked command by command instead, as are `make` and
`importctl` commands in inline code. Relative links and their anchors must resolve.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from docopt import DocoptExit, docopt

from tests.conftest import ROOT, Databases
from tests.e2e.conftest import make_stack

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent
REST_PORT, GRPC_PORT = 8080, 9090
DOC_TIMEOUT = 90  # seconds for one doc's commands
KNOWN_BLOCKS = {"sh", "sh norun", "python", "python run", "json", "text"}
# Commands in inline code that are checked like those of `sh norun` blocks (importctl: only its
# subcommand and options, as prose names `importctl cancel` without a job).
CHECKED_INLINE = {"make", "importctl", "gunicorn", "dramatiq", "docker-compose"}

# A few documented outcomes, by doc: each must appear in what its commands print.
OUTCOMES = {
    "README.md": [
        '"customer_id": "acme"',  # the REST job's view
        "succeeded 12 0 0 9",  # the gRPC watch's last Job: 9 rows unchanged after the REST upsert
        "globex/organizations",  # importctl status
    ],
    "api.md": [
        "HTTP/1.1 202",  # the first enqueue; the same request and key again answers 200
        '"rows_deleted": 5',  # the replace took acme's XLSX users away
        '"status": "undone"',  # and its undo brought them back
        '"status": 409',  # a cancel of a job that has ended
        '"status": 403',  # acme's token asking for globex's jobs
        "StatusCode.FAILED_PRECONDITION",  # the gRPC cancel of an ended job
        "exit 1",  # importctl cancel of an ended job
    ],
    "rejects.md": ["U-007,bob-at-example", "HTTP/1.1 202"],
    "feeds.md": ['"found": 1, "enqueued": 1', "again: enqueued 0", '"imported"', '{"files": [], "next": null}'],
    "operating.md": ["import_jobs_finished_total{"],
    "uploads.md": ["upload-offset: 100", '"status": "queued"'],  # tus by hand: half sent, then enqueued
}


@dataclass
class Block:
    """A fenced block of a doc: its info string, text and first line (1-based)."""

    doc: Path
    info: str
    text: str
    line: int

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a markdown file, in order."""
    found, current, lines = [], None, doc.read_text().split("\n")
    for number, line in enumerate(lines, 1):
        if current is None and line.startswith("```"):
            current = Block(doc, line[3:].strip(), "", number)
        elif current is not None and line.strip() == "```":
            found.append(current)
            current = None
        elif current is not None:
            current.text += line + "\n"
    assert current is None, f"{doc.relative_to(ROOT)}:{current.line}: a fenced block is never closed"
    return found


def prose(doc: Path) -> str:
    """A doc's text outside its fenced blocks."""
    return re.sub(r"^```.*?^```[ \t]*$", "", doc.read_text(), flags=re.S | re.M)


def command_lines(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.split("\n") if shlex.split(line, comments=True)]


def words(command: str) -> list[str]:
    """A command's words, without leading VAR=value assignments and its comment."""
    parts = shlex.split(command, comments=True)
    while parts and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", parts[0]):
        parts.pop(0)
    return parts


# -- checking a command without running it ---------------------------------------------------


def importctl_usage() -> str:
    """importctl's docopt usage, as `importctl --help` prints it."""
    done = subprocess.run([str(VENV_BIN / "importctl"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_importctl(argv: list[str], usage: str, *, whole: bool) -> str | None:
    """None if importctl accepts these arguments (whole: as a full command; else the subcommand
    and each --option it names exist, as prose mentions `importctl cancel`); else why not."""
    if whole:
        try:
            docopt(usage, argv=argv, default_help=False)
        except DocoptExit:
            return f"importctl's usage does not accept {shlex.join(argv)!r}"
        return None
    usage_lines = [
        line.split() for line in usage.split("Options:")[0].split("\n") if line.strip().startswith("importctl")
    ]
    if not any(len(parts) > 1 and parts[1] == argv[0] for parts in usage_lines):
        return f"importctl has no subcommand {argv[0]!r}"
    for option in (arg.split("=")[0] for arg in argv[1:] if arg.startswith("--")):
        if option not in usage:
            return f"importctl has no option {option}"
    return None


def check_make(argv: list[str], env: dict[str, str]) -> str | None:
    """None if `make -n` accepts the target (and variables)."""
    done = subprocess.run(["make", "-n", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return None if done.returncode == 0 else f"make -n {shlex.join(argv)} failed: {done.stderr.strip()}"


def check_module(module: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"no module {module}"


def check_options(program: str, argv: list[str]) -> str | None:
    """None if the program is installed and its --help lists every --option used."""
    path = VENV_BIN / program
    if not path.exists():
        return f"{program} is not installed in the virtualenv"
    help_text = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60).stdout
    missing = [arg.split("=")[0] for arg in argv if arg.startswith("--") and arg.split("=")[0] not in help_text]
    return f"{program} --help lists no {missing}" if missing else None


def check_compose(argv: list[str], usage: str) -> str | None:
    """None if the services and profiles it names are in docker-compose.yml (and an exec'd
    importctl command parses)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    profiles = {profile for service in services.values() for profile in service.get("profiles", [])}
    named, argv = [], list(argv)
    while argv:
        arg = argv.pop(0)
        if arg == "--profile":
            if (profile := argv.pop(0)) not in profiles:
                return f"docker-compose.yml has no profile {profile}"
        elif arg.startswith("--scale"):
            named.append((arg.split("=", 1)[1] if "=" in arg else argv.pop(0)).split("=")[0])
        elif arg == "exec":
            named.append(argv[0])
            if argv[1:2] == ["importctl"]:
                return check_importctl(argv[2:], usage, whole=True)
            break
        elif arg not in ("up", "down", "-d", "--build", "-v", "logs", "ps"):
            return f"no check for docker-compose argument {arg!r}"
    unknown = [name for name in named if name not in services]
    return f"docker-compose.yml has no service {unknown}" if unknown else None


def check_command(command: str, usage: str, env: dict[str, str], *, whole: bool = True) -> str | None:
    """None if a command that is not run here is right as far as can be told without running it."""
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    if syntax.returncode:
        return f"bash says: {syntax.stderr.strip()}"
    argv = words(command)
    program, args = argv[0], argv[1:]
    if program == "make":
        return check_make(args, env)
    if program == "importctl":
        return check_importctl(args, usage, whole=whole)
    if program in ("python", "python3") and args[:1] == ["-m"]:
        return check_module(args[1]) if len(args) > 1 else "python -m names no module"
    if program == "gunicorn":
        return check_options("gunicorn", args) or check_module(args[-1].split(":")[0])
    if program == "dramatiq":
        return check_options("dramatiq", args) or check_module(args[0])
    if program == "docker-compose":
        return check_compose(args, usage)
    if program == "sudo" and args[:2] == ["apt-get", "install"]:  # as the Makefile says to
        return None if shlex.join(argv) in (ROOT / "Makefile").read_text() else "the Makefile says otherwise"
    if "/" in program:  # a script of the repository
        path = ROOT / program
        return None if path.is_file() and os.access(path, os.X_OK) else f"{program} is not an executable file"
    return f"no check for {program!r} commands: add one to tests/e2e/test_docs.py"


# -- the static checks -----------------------------------------------------------------------


def test_every_fenced_block_says_what_it_holds() -> None:
    unknown = [
        f"{block.where()}: {block.info!r}" for doc in DOCS for block in blocks(doc) if block.info not in KNOWN_BLOCKS
    ]
    assert not unknown, f"blocks must be one of {sorted(KNOWN_BLOCKS)}: {unknown}"


def test_commands_that_are_not_run_name_real_targets_subcommands_modules_and_services() -> None:
    usage, env = importctl_usage(), dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    problems, checked = [], 0
    for doc in DOCS:
        for block in blocks(doc):
            if block.info == "sh norun":
                for command in command_lines(block.text):
                    checked += 1
                    if problem := check_command(command, usage, env):
                        problems.append(f"{block.where()}: {command.strip()}: {problem}")
            elif block.info == "python":
                try:
                    compile(block.text, block.where(), "exec")
                except SyntaxError as exc:
                    problems.append(f"{block.where()}: {exc}")
        for span in re.findall(r"`([^`\n]+)`", prose(doc)):
            parts = words(span) if span.count("'") % 2 == 0 and span.count('"') % 2 == 0 else []
            python_module = parts[:2] in (["python", "-m"], ["python3", "-m"]) and len(parts) > 2
            if len(parts) > 1 and (parts[0] in CHECKED_INLINE or python_module):
                checked += 1
                if problem := check_command(span, usage, env, whole=False):
                    problems.append(f"{doc.relative_to(ROOT)}: `{span}`: {problem}")
    assert not problems, "\n".join(problems)
    assert checked > 20, f"only {checked} commands found: is the parsing broken?"


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for a doc's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", prose(doc), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def test_relative_links_and_their_anchors_resolve() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(doc)):
            if re.match(r"[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (doc.parent / path_part).resolve() if path_part else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}: no such file")
            elif anchor and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target}: no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_the_files_and_folders_the_docs_name_exist() -> None:
    """Paths from the repository root (`service/edges/api.py`), and inside service/ (`stages/control`)."""
    top = tuple(f"{entry.name}/" for entry in ROOT.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    packages = tuple(f"{entry.name}/" for entry in (ROOT / "service").iterdir() if (entry / "__init__.py").exists())
    missing = []
    for doc in DOCS:
        for span in re.findall(r"`([^`\s]+)`", prose(doc)):
            if re.search(r"[<*]", span):
                continue
            if span.startswith(packages):
                if not any((ROOT / "service" / name).exists() for name in (span, f"{span}.py")):
                    missing.append(f"{doc.relative_to(ROOT)}: {span} (in service/)")
            elif span.startswith(top) and not (ROOT / span).exists():
                ignored = subprocess.run(["git", "check-ignore", "-q", span], cwd=ROOT).returncode == 0
                if not ignored:  # docker/secrets/ is made on demand
                    missing.append(f"{doc.relative_to(ROOT)}: {span}")
    assert not missing, "\n".join(missing)


def test_readme_is_short_and_links_every_page_of_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split("\n")) < 150
    unlinked = [page.name for page in DOCS[1:] if f"(docs/{page.name})" not in readme]
    assert not unlinked, f"README.md links no {unlinked}"


# -- running the docs ------------------------------------------------------------------------


def script(doc: Path) -> str | None:
    """A bash script running the doc's `sh` and `python run` blocks in order, each announced on
    stdout and stderr; None if the doc has none."""
    parts = []
    for number, block in enumerate(blocks(doc), 1):
        if block.info not in ("sh", "python run"):
            continue
        # On a line of its own: curl's answers end without a newline.
        marker = f"printf '\\n@@ block {number} ({block.where()}) @@\\n' | tee /dev/stderr"
        if block.info == "sh":
            parts.append(f"{marker}\n{block.text}")
        else:
            parts.append(f"{marker}\npython - <<'DOCS_PYTHON_BLOCK'\n{block.text}DOCS_PYTHON_BLOCK\n")
    return "set -euo pipefail\n" + "\n".join(parts) + "printf '\\n@@ done @@\\n'\n" if parts else None


def checkout(tmp: Path) -> Path:
    """A copy of the repository root to run the docs in: links to everything but sample/, which
    is copied (it is the blob root; importctl --file uploads into it), so the docs' files land
    there and not in the checkout."""
    root = tmp / "import-service"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name == "sample":
            shutil.copytree(entry, root / "sample", ignore=shutil.ignore_patterns("uploads"))
        elif entry.name not in (".git", ".data"):
            (root / entry.name).symlink_to(entry)
    return root


def require_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"port {port} on 127.0.0.1 is in use; the docs' commands need it (stop what listens there)")


@dataclass
class DocsStack:
    """Where the docs' commands run (a copy of the repository root) and their environment."""

    root: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def docs_stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsStack]:
    """make serve's three processes on the docs' addresses, with fresh databases and tokens of api_tokens.json."""
    root = checkout(tmp_path_factory.mktemp("docs").resolve())
    require_free(REST_PORT)
    require_free(GRPC_PORT)
    # make_stack yields once, then (as this loop asks for the next) stops what it started.
    for stack in make_stack(databases, tmp_path_factory, BLOB_ROOT=str(root / "sample")):
        env = dict(
            stack.env,
            API_TOKENS_PATH=str(ROOT / "api_tokens.json"),
            REST_ADDR=f"127.0.0.1:{REST_PORT}",
            GRPC_ADDR=f"127.0.0.1:{GRPC_PORT}",
            PATH=f"{VENV_BIN}:{stack.env['PATH']}",
            XDG_CACHE_HOME=str(root / ".cache"),  # importctl upload keeps its resume state there
        )
        stack.start(str(VENV_BIN / "gunicorn"), "-b", env["REST_ADDR"], "service.rest:app", port=REST_PORT, env=env)
        stack.start(sys.executable, "-m", "service.grpc_server", port=GRPC_PORT, env=env)
        yield DocsStack(root, env)


@pytest.mark.parametrize("doc", [doc for doc in DOCS if script(doc)], ids=lambda doc: doc.name)
def test_the_commands_of_a_doc_run_as_written(doc: Path, docs_stack: DocsStack) -> None:
    bash = subprocess.Popen(
        ["bash", "-c", script(doc) or ""],
        cwd=docs_stack.root,
        env=docs_stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bash.communicate(timeout=DOC_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(bash.pid, signal.SIGKILL)  # and whatever it started (a watch, a wait loop)
        stdout, stderr = bash.communicate()
    ran = re.findall(r"^@@ block .*? @@$", stdout, flags=re.M)
    where = ran[-1] if ran else "before the first block"
    assert bash.returncode == 0 and stdout.rstrip().endswith("@@ done @@"), (
        f"{doc.name}: exit {bash.returncode} (or over {DOC_TIMEOUT} s) in {where}\n"
        f"--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
    )
    missing = [outcome for outcome in OUTCOMES.get(doc.name, []) if outcome not in stdout]
    assert not missing, f"{doc.name}: the documented outcomes {missing} are not in:\n{stdout[-6000:]}"


def test_every_doc_with_documented_outcomes_has_commands_to_run() -> None:
    runnable = {doc.name for doc in DOCS if script(doc)}
    assert set(OUTCOMES) <= runnable, set(OUTCOMES) - runnable
