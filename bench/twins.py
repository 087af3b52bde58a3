"""The twins of the bench's file (SPEC 11 and 18; TWINS=gz,zst,jsonl,xlsx, XLSX=1): the same rows as .csv.gz
(gzip -6), .csv.zst (zstd -3), .jsonl and .xlsx (bench/data.py writes them once and caches them).

Each is appended right after the CSV append run (and the rejects.csv download) on the same workers, for a
customer of its own with its own fresh database and an empty table. The workers are idle before each run,
every run is timed from its enqueue to the job's end, and the workers' peak RSS is taken over that run alone.
Each job must succeed with the CSV's counts (rows_total the file's rows), and its customer's table must hold
exactly the valid rows.

The targets are ratios to the same file uncompressed, in the same bench run: gzip and zstd at least 0.8x
its rows/s, JSON Lines at least 1x, with the same memory bound. The big append run is no fair reference for
them: ten small jobs run beside it, and it comes first after the warm-up. So when one of those twins runs,
the plain CSV is appended first in the same way as the twins, for customer twin_csv, and "x CSV" compares
with that run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import together
from bench.data import Files
from bench.timed import Run, import_file

if TYPE_CHECKING:
    from bench.runs import Session

MB = 1024 * 1024
CSV = "csv"  # the plain CSV, run like a twin as the twins' reference


@dataclass(frozen=True)
class Kind:
    """One kind of run: its label in the table, its customer (in the bench's customer map, with a database of
    its own), and its target as a ratio to the plain CSV's rows/s, if it has one."""

    label: str
    customer: str
    target: float | None = None


# In the order they run; the data.TWIN_SUFFIXES kinds and the plain CSV.
KINDS = {
    CSV: Kind("CSV (plain, alone)", "twin_csv"),
    "gz": Kind("gzip -6 (.csv.gz)", "twin_gz", 0.8),
    "zst": Kind("zstd -3 (.csv.zst)", "twin_zst", 0.8),
    "jsonl": Kind("JSON Lines (.jsonl)", "twin_jsonl", 1.0),
    "xlsx": Kind("XLSX (openpyxl-written)", "sheet"),
}


@dataclass
class Twin:
    """One twin's run: its kind, the run, the file's size, and the workers' peak RSS (largest first) during the
    run alone (isolated) or, when the kernel would not reset the high-water mark, over their life until its end."""

    kind: str
    run: Run
    size: int
    peaks: list[int]
    isolated: bool


def kinds(files: Files) -> list[str]:
    """The runs, in order: the plain CSV first when a twin with a target runs, then the twins of files."""
    wanted = [kind for kind in KINDS if kind in files.twins]
    if any(KINDS[kind].target is not None for kind in wanted):
        wanted.insert(0, CSV)
    return wanted


def customers(files: Files) -> list[str]:
    """The customers the twins' runs need, each to get a fresh database."""
    return [KINDS[kind].customer for kind in kinds(files)]


def run(session: Session, files: Files) -> list[Twin]:
    """Every twin's run, one after another."""
    return [append(session, files, kind) for kind in kinds(files)]


def append(session: Session, files: Files, kind: str) -> Twin:
    """Append one twin for its customer, timed from the enqueue to the job's end; its counts must be the CSV's and
    its table hold exactly the valid rows. The workers' peak RSS is reset just before (they are idle then) and read
    right after, to give the run's own peak."""
    spec = KINDS[kind]
    path = together.place(files.original if kind == CSV else files.twins[kind], session.blob_root / spec.customer)
    expect = {"rows_inserted": files.valid, "rows_invalid": files.rows - files.valid}
    label = f"{spec.label} append"
    with session.phase(f"twin {spec.label}") as phase:
        timed, job, _ = import_file(session, path, label, {}, expect, customer=spec.customer)
    if job.rows_total != files.rows:
        raise session.failure(job, label, f"rows_total is {job.rows_total:,}, must be {files.rows:,}")
    total, held = session.table_rows(job.id, session.others[spec.customer])
    if total != files.valid or held != total:
        raise session.failure(
            job, label, f"the table holds {total:,} rows, {held:,} of the job; must be {files.valid:,}"
        )
    return Twin(kind, timed, path.stat().st_size, sorted(phase.peaks.values(), reverse=True), phase.isolated)


def report_lines(twins: list[Twin], copy_rate: float, processes: int, width: int) -> list[str]:
    """The table's lines: each twin's time, rows/s, ratios to COPY and to the plain CSV, its workers' peak RSS
    (and how far the highest is from the plain CSV's), its file's size, and each target met or not."""
    if not twins:
        return []
    plain = next((twin for twin in twins if twin.kind == CSV), None)
    lines = [
        f"{'twins, each alone':<{width}}{'seconds':>10}{'rows/s':>12}{'x COPY':>9}{'x CSV':>8}"
        "  worker peak RSS MiB, run alone (highest - CSV's); file"
    ]
    for twin in twins:
        spec, rate = KINDS[twin.kind], twin.run.rows / twin.run.seconds
        ratio = rate / (plain.run.rows / plain.run.seconds) if plain is not None else None
        peaks = " / ".join(f"{peak / MB:.1f}" for peak in twin.peaks[:processes])
        if plain is not None and twin is not plain:
            peaks += f" ({(twin.peaks[0] - plain.peaks[0]) / MB:+.1f})" if twin.peaks and plain.peaks else ""
        notes = [f"{peaks}; {twin.size / MB:.1f} MiB"]
        if plain is not None and twin is not plain:
            notes[0] += f" ({plain.size / twin.size:.1f}x smaller)" if twin.size < plain.size else ""
        if not twin.isolated:
            notes.append("peak since the worker started: VmHWM could not be reset")
        if spec.target is not None and ratio is not None:
            notes.append(f"target >= {spec.target:g}x CSV: {'met' if ratio >= spec.target else 'NOT met'}")
        lines.append(
            f"{'  ' + spec.label:<{width}}{twin.run.seconds:>10.2f}{rate:>12,.0f}{rate / copy_rate:>9.2f}"
            f"{'-' if ratio is None else f'{ratio:.2f}':>8}  {'; '.join(notes)}"
        )
    return lines
