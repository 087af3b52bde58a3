"""Rejected rows as a customer gets them back (SPEC 14): one formatting for the CSV download,
the JSON pages, the gRPC stream and `importctl rejects`.

A reject is stored with its cells as read: for a file with a header, a list in the file's
column order (the names are the job plan's header); for a key=value or JSON Lines file, an
object (a JSON Lines line that is not one: its raw text, under the key `_line`). A JSON
Lines object's values are JSON values: every view shows those that are not strings as
their JSON text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

ERRORS_COLUMN = "errors"  # the last column of a rejects.csv; ignored when the file comes back
KEYED_KINDS = ("kv", "jsonl")  # formats whose records are objects: their keys are the columns
DEFAULT_PAGE, MAX_PAGE = 100, 1000
_FLUSH_BYTES = 64 * 1024


@dataclass(frozen=True)
class Reject:
    """One stored invalid row."""

    source_row: int
    cells: list[str] | dict[str, Any]
    errors: list[dict[str, Any]]


def header_names(plan: dict[str, Any] | None) -> list[str] | None:
    """The file's header names (blank ones as `column N`), or None for a key=value or JSON Lines file."""
    if not plan or plan["format"]["kind"] in KEYED_KINDS:
        return None
    names = [("" if name is None else str(name)).strip() for name in plan["header"]["names"]]
    return [name or f"column {i}" for i, name in enumerate(names, start=1)]


def record(reject: Reject, names: list[str] | None) -> dict[str, str]:
    """The reject's cells keyed by the file's header names (or its own keys), in file order.

    An `errors` column (a rejects.csv imported again) is left out: a new one is made. A value
    that is not a string (a JSON Lines value) is given as its JSON text."""
    if isinstance(reject.cells, dict):
        return {key: text(value) for key, value in reject.cells.items() if not _ours(key)}
    names = names or []
    extra = [f"column {i}" for i in range(len(names) + 1, len(reject.cells) + 1)]
    return {name: cell for name, cell in zip(names + extra, reject.cells, strict=False) if not _ours(name)}


def text(value: Any) -> str:
    """A stored value as text: a string as it is, any other JSON value as its JSON text."""
    return value if value.__class__ is str else json.dumps(value, ensure_ascii=False)


def _ours(name: str) -> bool:
    """Whether a column is the `errors` column of an earlier rejects.csv."""
    return name.strip().casefold() == ERRORS_COLUMN


def errors_text(errors: Iterable[dict[str, Any]]) -> str:
    """`field: message` for each error, joined by `; `.

    Our messages already start with their field (`email: 'x' is not an email address`), and
    are not prefixed twice; a whole-record error has no field."""
    return "; ".join(_error_text(e.get("field"), str(e["message"])) for e in errors)


def _error_text(field: str | None, message: str) -> str:
    return (
        message
        if not field or message.startswith(f"{field}:") or message.startswith(f"{field} ")
        else f"{field}: {message}"
    )


def csv_bytes(rejects: Callable[[], Iterator[Reject]], names: list[str] | None) -> Iterator[bytes]:
    """The rejects.csv, as UTF-8 pieces of about 64 KiB: header, one line per reject.

    For a key=value or JSON Lines file the columns are every key the rejects have, in
    first-seen order, which takes one pass over them before the one that writes (`rejects` is
    called twice); a value that is not a string is written as its JSON text.
    """
    if names is None:
        seen: dict[str, None] = {}
        for reject in rejects():
            seen.update(dict.fromkeys(reject.cells))
        keys = [key for key in seen if not _ours(key)]
        columns = list(range(len(keys)))
    else:
        keys = names
        columns = [i for i, name in enumerate(names) if not _ours(name)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*(keys[i] for i in columns), ERRORS_COLUMN])
    for reject in rejects():
        if isinstance(reject.cells, dict):
            cells = reject.cells
            row = [text(cells[keys[i]]) if keys[i] in cells else "" for i in columns]
        else:
            row = [reject.cells[i] if i < len(reject.cells) else "" for i in columns]
        writer.writerow([*row, errors_text(reject.errors)])
        if out.tell() >= _FLUSH_BYTES:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def page_limit(value: Any, default: int = DEFAULT_PAGE) -> int:
    """A page size from 1 to MAX_PAGE; ValueError for anything else."""
    if value is None or value == "" or value == 0:
        return default
    if isinstance(value, bool):
        raise ValueError
    number = int(value)
    if not 1 <= number <= MAX_PAGE:
        raise ValueError
    return number


def after_row(value: Any) -> int:
    """The source_row to page after (0 = from the start); ValueError for anything else."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError
    number = int(value)
    if number < 0:
        raise ValueError
    return number
