"""The size limits a file must respect (SPEC section 7), the errors that name them, and
bounded ways to repeat a file's names in a message."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.errors import LimitExceeded
from service.units import GIB, KIB, MIB, human_size

__all__ = ["GIB", "KIB", "MIB", "human_size"]  # (and the names below) sizes live in service.units


@dataclass(frozen=True)
class Limits:
    """Size limits a file must respect (SPEC section 7); sizes count the text a record reads."""

    max_file_bytes: int = 2 * GIB
    max_field_bytes: int = MIB
    max_record_bytes: int = 10 * MIB
    max_xlsx_bytes: int = GIB  # total uncompressed size of all zip members
    max_columns: int = 16_384  # columns of a header, distinct keys of a key=value file
    max_text_bytes: int = 4 * GIB  # the whole file's text (an XLSX shared string at each use)
    max_compression_ratio: int = 200  # decompressed bytes per compressed byte (a gzip, a ZIP member...)


def limit_text(what: str, key: str, limit: int) -> str:
    """Phrase a limit breach naming the config key and its human size."""
    return f"{what} is longer than the {key} limit ({human_size(limit)})"


def field_error(limits: Limits, line: int) -> LimitExceeded:
    """A field (an XLSX cell: the text it stands for) passes max_field_bytes."""
    return LimitExceeded(limit_text("a field", "max_field_bytes", limits.max_field_bytes), line=line)


def record_error(limits: Limits, line: int) -> LimitExceeded:
    """A record passes max_record_bytes."""
    return LimitExceeded(limit_text("a record", "max_record_bytes", limits.max_record_bytes), line=line)


def columns_error(count: int, limits: Limits, line: int | None) -> LimitExceeded:
    """A header has more columns than max_columns."""
    return LimitExceeded(
        f"the header has {count:,} columns, more than the max_columns limit ({limits.max_columns:,})", line=line
    )


def text_error(what: str, limits: Limits, line: int | None = None) -> LimitExceeded:
    """The whole file's text passes max_text_bytes."""
    return LimitExceeded(limit_text(what, "max_text_bytes", limits.max_text_bytes), line=line)


def clip(text: str, size: int = 40) -> str:
    """A name cut to size characters, for a message that repeats it."""
    return text if len(text) <= size else text[:size] + "..."


def listed(names: Iterable[str], first: int = 10, size: int = 40, *, quoted: bool = False) -> str:
    """The first names (each clipped), then how many more: a message's list stays short
    whatever the file holds."""
    shown: list[str] = []
    more = 0
    for name in names:
        if len(shown) < first:
            shown.append(repr(clip(name, size)) if quoted else clip(name, size))
        else:
            more += 1
    return ", ".join(shown) + (f" and {more:,} more" if more else "")


class TextMeter:
    """Counts a file's text as its rows are read, against max_text_bytes: `row` is the
    size of the last row counted, `total` of all of them."""

    __slots__ = ("limits", "row", "total", "what")

    def __init__(self, limits: Limits, what: str) -> None:
        self.limits = limits
        self.what = what  # the text's name in the error: "the workbook's text"...
        self.row = 0
        self.total = 0

    def add(self, size: int, line: int) -> None:
        """Count one row's text; refuse the file at the row that brings it past the limit."""
        self.row = size
        self.total += size
        if self.total > self.limits.max_text_bytes:
            raise text_error(self.what, self.limits, line)


class DistinctKeys:
    """The distinct keys of a keyed file (key=value, JSON Lines) read so far. Its keys are its
    columns: at most max_columns of them, and together no longer than a header may be
    (max_record_bytes), so that neither the scan nor a rejects.csv holds more than a header's worth."""

    __slots__ = ("seen", "size", "limits", "encoding", "kind")

    def __init__(self, limits: Limits, encoding: str, kind: str) -> None:
        self.seen: set[str] = set()
        self.size = 0
        self.limits = limits
        self.encoding = encoding
        self.kind = kind  # "a key=value file", named in the errors

    def add(self, cells: Iterable[str], line: int) -> None:
        """Count the record's new keys; refuse the file at the line that brings them past a limit."""
        seen = self.seen
        if seen.issuperset(cells):
            return
        for key in cells:
            if key not in seen:
                seen.add(key)
                self.size += len(key.encode(self.encoding))
        limits = self.limits
        if len(seen) > limits.max_columns:
            raise LimitExceeded(
                f"the file has more distinct keys than the max_columns limit ({limits.max_columns:,}); "
                f"{self.kind}'s keys are its columns",
                line=line,
            )
        if self.size > limits.max_record_bytes:
            raise LimitExceeded(
                f"the file's distinct keys are longer together than the max_record_bytes limit "
                f"({human_size(limits.max_record_bytes)}); {self.kind}'s keys are its header",
                line=line,
            )
