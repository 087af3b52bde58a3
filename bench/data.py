"""The benchmark's input: a deterministic users CSV, its 10%-changed twin, the same rows as .csv.gz, .csv.zst,
.jsonl and .xlsx (TWINS=, XLSX=1), and what to expect of them."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import gzip
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from openpyxl import Workbook

FIRST = ["Ann", "Bob", "Zoë", "Łukasz", "山田", "José", "Chloé", "Dmitri", "Aoife", "Mette"]
LAST = ["Lee", "Müller", "Smith, Jr.", "Østergaard", "García", "Nguyen", "O'Brien", "Kowalski"]
ROLES = ["student", "teacher", "admin"]
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"
CHANGE_EVERY = 10  # the twin file gives every 10th row another first_name
# The CSV's active words as the booleans a spreadsheet holds (the service reads both the same way).
BOOLEANS = {"yes": True, "true": True, "no": False, "0": False}
# A job's counts the runs check: each must be what the run expects, 0 unless it says otherwise.
COUNTS = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_duplicate", "rows_deleted", "rows_invalid")
GZIP_LEVEL = 6  # gzip's own default, what `gzip users.csv` gives
ZSTD_LEVEL = 3  # zstd's own default, what `zstd users.csv` gives


@dataclass(frozen=True)
class Files:
    """The two files of one size, and how many of their rows are valid / changed and valid; twins, by kind
    (TWIN_SUFFIXES), are the files asked for that hold the original's rows in another form."""

    original: Path
    changed: Path
    rows: int
    valid: int
    changed_valid: int
    invalid_ratio: float
    twins: dict[str, Path] = field(default_factory=dict)


def records(rows: int, invalid_ratio: float, seed: int = 42) -> Iterator[tuple[str, str, bool, bool]]:
    """(line, its changed twin, valid, changed) per row; the originals are the bench's historic file."""
    rng = random.Random(seed)
    for i in range(1, rows + 1):
        last = rng.choice(LAST)
        valid = rng.random() >= invalid_ratio
        email = f"user{i}@example.com" if valid else f"user{i}-at-example"
        first = rng.choice(FIRST)
        rest = (
            f'"{last}",{rng.choice(ROLES)},{rng.randint(0, 99)},'
            f"{rng.choice(('yes', 'no', 'true', '0'))},2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T09:30:00Z\n"
        )
        line = f"u{i},{email},{first},{rest}"
        if i % CHANGE_EVERY:
            yield line, line, valid, False
        else:
            other = FIRST[(FIRST.index(first) + 1) % len(FIRST)]
            yield line, f"u{i},{email},{other},{rest}", valid, True


def prepare(folder: Path, rows: int, invalid_ratio: float) -> Files:
    """Generate both files (and a note of their counts) unless an earlier run left them."""
    stem = folder / f"users-{rows}-{invalid_ratio}"
    original, changed, note = (Path(f"{stem}{suffix}") for suffix in (".csv", "-changed10.csv", ".counts.json"))
    if not (original.exists() and changed.exists() and note.exists()):
        print(f"generating {original} and {changed.name} ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        counts = _write(original, changed, rows, invalid_ratio)
        note.write_text(json.dumps(counts))
    counts = json.loads(note.read_text())
    return Files(original, changed, rows, counts["valid"], counts["changed_valid"], invalid_ratio)


def prepare_twins(files: Files, kinds: tuple[str, ...]) -> Files:
    """files with their twins of these kinds (TWIN_SUFFIXES), each next to the CSV and written from it unless an
    earlier run left it: under a partial name first, renamed once complete, so that no half file is cached."""
    twins = dict(files.twins)
    for kind in kinds:
        path = files.original.with_name(files.original.stem + TWIN_SUFFIXES[kind])
        if not path.exists():
            print(f"generating {path} ...", flush=True)
            started = time.perf_counter()
            partial = path.with_name(f"{files.original.stem}.partial{TWIN_SUFFIXES[kind]}")
            _WRITERS[kind](files.original, partial)
            partial.replace(path)
            print(f"... written in {time.perf_counter() - started:.0f} s", flush=True)
        twins[kind] = path
    return dataclasses.replace(files, twins=twins)


def _write_gzip(source: Path, target: Path) -> None:
    """The CSV gzipped as `gzip -6` would: the original's name in the header, no time stamp (the same bytes
    every time)."""
    with source.open("rb") as text, target.open("wb") as raw:
        name = source.name  # not the partial name
        with gzip.GzipFile(name, "wb", compresslevel=GZIP_LEVEL, fileobj=raw, mtime=0) as out:
            shutil.copyfileobj(text, out, 1024 * 1024)


def _write_zstd(source: Path, target: Path) -> None:
    """The CSV in one zstd frame as `zstd -3` would write it, its content size in the frame header."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    with source.open("rb") as text, target.open("wb") as out:
        compressor.copy_stream(text, out, size=source.stat().st_size)


def _write_jsonl(source: Path, target: Path) -> None:
    """Each CSV row as one compact JSON object per line (UTF-8, non-ASCII unescaped, as `jq -c` writes it): the
    header's names as keys, the cells as JSON strings exactly as the CSV gives them, so that the service coerces
    them as it does the CSV's cells. An empty cell is left out: the service reads a missing key, an empty
    string and null alike, as absent (the bench's rows have no empty cell)."""
    with source.open(encoding="utf-8", newline="") as text, target.open("w", encoding="utf-8") as out:
        reader = csv.reader(text)
        names = next(reader)
        assert names == HEADER.strip().split(","), names
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        for row in reader:
            out.write(dumps({name: cell for name, cell in zip(names, row, strict=True) if cell}))
            out.write("\n")


def _write_xlsx(source: Path, target: Path) -> None:
    """The CSV's header and rows, written by openpyxl in write-only mode: age an int cell, active a bool cell,
    created_at a date-time cell (no time zone: the service reads it as UTC, as the CSV's "Z" says), the rest
    strings (openpyxl writes them inline). An invalid row stays invalid the same way (its email). About a
    minute per million rows here."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("users")
    with source.open(encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        header = next(reader)
        assert header == HEADER.strip().split(","), header
        sheet.append(header)
        for external_id, email, first, last, role, age, active, created_at in reader:
            assert created_at.endswith("Z"), created_at
            moment = datetime.datetime.fromisoformat(created_at[:-1])
            sheet.append([external_id, email, first, last, role, int(age), BOOLEANS[active], moment])
    workbook.save(target)


# The twins' kinds, in the order they run, and their files' endings (after the CSV's stem).
TWIN_SUFFIXES = {"gz": ".csv.gz", "zst": ".csv.zst", "jsonl": ".jsonl", "xlsx": ".xlsx"}
_WRITERS: dict[str, Callable[[Path, Path], None]] = {
    "gz": _write_gzip,
    "zst": _write_zstd,
    "jsonl": _write_jsonl,
    "xlsx": _write_xlsx,
}


def prepare_head(folder: Path, rows: int, invalid_ratio: float) -> tuple[Path, int]:
    """The first `rows` rows of the bench's file (the same seed gives the same lines) and how many of them
    are valid; generated unless an earlier run left it."""
    path = folder / f"users-{rows}-{invalid_ratio}-head.csv"
    note = folder / f"users-{rows}-{invalid_ratio}-head.counts.json"
    if not (path.exists() and note.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        valid = 0
        with path.open("w", encoding="utf-8", newline="") as out:
            out.write(HEADER)
            for line, _, is_valid, _ in records(rows, invalid_ratio):
                out.write(line)
                valid += is_valid
        note.write_text(json.dumps({"valid": valid}))
    return path, int(json.loads(note.read_text())["valid"])


def _write(original: Path, changed: Path, rows: int, invalid_ratio: float) -> dict[str, int]:
    valid_rows, changed_valid = 0, 0
    with (
        original.open("w", encoding="utf-8", newline="") as out,
        changed.open("w", encoding="utf-8", newline="") as twin,
    ):
        out.write(HEADER)
        twin.write(HEADER)
        for line, other, valid, is_changed in records(rows, invalid_ratio):
            out.write(line)
            twin.write(other)
            valid_rows += valid
            changed_valid += valid and is_changed
    return {"valid": valid_rows, "changed_valid": changed_valid}
