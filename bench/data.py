"""The benchmark's input: a deterministic users CSV, its 10%-changed twin, and what to expect of them."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FIRST = ["Ann", "Bob", "Zoë", "Łukasz", "山田", "José", "Chloé", "Dmitri", "Aoife", "Mette"]
LAST = ["Lee", "Müller", "Smith, Jr.", "Østergaard", "García", "Nguyen", "O'Brien", "Kowalski"]
ROLES = ["student", "teacher", "admin"]
HEADER = "external_id,email,first_name,last_name,role,age,active,created_at\n"
CHANGE_EVERY = 10  # the twin file gives every 10th row another first_name
# A job's counts the runs check: each must be what the run expects, 0 unless it says otherwise.
COUNTS = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_duplicate", "rows_deleted", "rows_invalid")


@dataclass(frozen=True)
class Files:
    """The two files of one size, and how many of their rows are valid / changed and valid."""

    original: Path
    changed: Path
    rows: int
    valid: int
    changed_valid: int
    invalid_ratio: float


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
