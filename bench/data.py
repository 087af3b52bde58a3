"""The benchmark's input: a deterministic users CSV, its 10%-changed twin, an .xlsx of the same rows (XLSX=1),
and what to expect of them."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Files:
    """The two files of one size, and how many of their rows are valid / changed and valid; xlsx, when asked
    for, holds the original's rows."""

    original: Path
    changed: Path
    rows: int
    valid: int
    changed_valid: int
    invalid_ratio: float
    xlsx: Path | None = None


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


def prepare_xlsx(files: Files) -> Files:
    """files with their .xlsx twin (next to the CSV), written by openpyxl in write-only mode unless an earlier
    run left it: the CSV's header and rows, age an int cell, active a bool cell, created_at a date-time cell
    (no time zone: the service reads it as UTC, as the CSV's "Z" says), the rest strings (openpyxl writes them
    inline). An invalid row stays invalid the same way (its email). About a minute per million rows here."""
    path = files.original.with_suffix(".xlsx")
    if not path.exists():
        print(f"generating {path} (openpyxl, write-only) ...", flush=True)
        started = time.perf_counter()
        partial = path.with_name(f"{path.stem}.partial.xlsx")  # renamed once complete: no half file is cached
        _write_xlsx(files.original, partial)
        partial.replace(path)
        print(f"... written in {time.perf_counter() - started:.0f} s", flush=True)
    return dataclasses.replace(files, xlsx=path)


def _write_xlsx(source: Path, target: Path) -> None:
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
