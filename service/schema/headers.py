"""Header mapping: which field of a product each column of a file, or each key of a key=value record, fills (SPEC 6).

A header name matches a property by its name or one of its `x-aliases`, compared
trimmed, with runs of inner white space made one space, and case-folded (header_key).
A HeaderMap is built once per product from its schema's properties; it answers once
per file (map_header) or once per set of keys (map_keys, aliases_used), never per row,
and rejects a file whose header is ambiguous or lacks a required column. The schema
checks (loading.py) use header_key too, to refuse two properties or aliases that would
match the same column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.errors import FileRejected
from service.schema.coerce import show


@dataclass(frozen=True)
class ColumnMap:
    """How the columns of a header map to a product's fields."""

    fields: tuple[str | None, ...]  # per column index: the schema property, or None if ignored
    unknown: tuple[str, ...]  # header names that match no property (trimmed, case kept)
    blank: tuple[int, ...]  # 1-based positions of blank header names (ignored columns)
    # (header name, field) for each column matched through an x-aliases entry, in column order;
    # the name is as written in the file, trimmed (case and inner spaces kept), like `unknown`.
    aliases: tuple[tuple[str, str], ...] = ()


def header_key(name: str) -> str:
    """Normalise a header name, key or alias for matching: trimmed, runs of inner white space
    made one space, case-folded ("E-Mail  Address " matches "e-mail address")."""
    return " ".join(name.split()).casefold()


class HeaderMap:
    """A product's header rules: its field names and aliases, and which fields a file must have."""

    __slots__ = ("_by_key", "_canonical", "_required")

    def __init__(self, properties: dict[str, Any], required: tuple[str, ...]) -> None:
        # Normalised header name -> field, for names and aliases; _canonical: the names alone.
        self._canonical = frozenset(header_key(field) for field in properties)
        self._by_key = {
            header_key(alias): field for field, prop in properties.items() for alias in prop.get("x-aliases", ())
        }
        self._by_key.update((header_key(field), field) for field in properties)
        self._required = required

    def map_header(self, names: list[str]) -> ColumnMap:
        """Match header names and aliases to fields; a name twice, two columns for one field
        or a missing required column rejects the file."""
        fields: list[str | None] = []
        unknown: list[str] = []
        blank: list[int] = []
        aliases: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        taken: dict[str, tuple[int, str]] = {}  # field -> (position, name as shown) of its column
        for position, written in enumerate(names, start=1):
            # A spreadsheet header cell may be empty (None) or a number.
            name = ("" if written is None else str(written)).strip()
            if not name:
                blank.append(position)
                fields.append(None)
                continue
            key = header_key(name)
            first = seen.setdefault(key, position)
            if first != position:
                raise FileRejected(f"duplicate column {show(name)} (columns {first} and {position})", line=1)
            field = self._by_key.get(key)
            fields.append(field)
            if field is None:
                unknown.append(name)
                continue
            if field in taken:
                other, other_name = taken[field]
                raise FileRejected(
                    f"columns {other_name} ({other}) and {show(name)} ({position}) both map to field {field}", line=1
                )
            taken[field] = (position, show(name))
            if key not in self._canonical:
                aliases.append((name, field))
        self._require(fields)
        return ColumnMap(tuple(fields), tuple(unknown), tuple(blank), tuple(aliases))

    def _require(self, present: Iterable[str | None]) -> None:
        """Reject the file if a required field has no column."""
        have = set(present)
        missing = [field for field in self._required if field not in have]
        if missing:
            raise FileRejected(f"missing required column(s): {', '.join(missing)}", line=1)

    def map_keys(self, keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """Map the keys of key=value records to fields (names or aliases), returning the mapping
        and the unknown keys; two keys for one field reject the file (FileRejected, no line)."""
        mapping: dict[str, str] = {}
        unknown: list[str] = []
        taken: dict[str, str] = {}  # field -> the key that maps to it
        for key in keys:
            field = self._by_key.get(header_key(key))
            if field is None:
                unknown.append(key)
                continue
            other = taken.setdefault(field, key)
            if other != key:
                # Sorted: a set of keys has no order, and the message must not vary between runs.
                one, two = sorted((other, key))
                raise FileRejected(f"keys {show(one)} and {show(two)} both map to field {field}")
            mapping[key] = field
        return mapping, unknown

    def aliases_used(self, keys: Iterable[str]) -> list[tuple[str, str]]:
        """(key, field) for each key that maps through an alias, sorted by key; like map_keys,
        two keys for one field reject the file."""
        mapping = self.map_keys(keys)[0]
        return sorted((key, field) for key, field in mapping.items() if header_key(key) not in self._canonical)
