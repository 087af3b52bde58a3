"""Turn raw cell values into the JSON values a product schema expects (SPEC 6).

Text cells (CSV, TSV, key=value, XLSX text) arrive as ``str``; other XLSX
cells keep their native type (int, float, bool, datetime, date, time).
Each schema property gets one coercer, built once when the schema loads, so
the per-row work is one function call per cell.

The values of a JSON Lines record (SPEC 18) are JSON's own: a string is coerced
as a cell is, any other value goes to the schema as it is, so a coercer built for
a property marked by json_values takes a number, true/false, an array or an
object only where the schema's type does (null, like an empty cell, is absent).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "ABSENT",
    "BOOLEAN_WORDS",
    "EXACT_CLASSES",
    "SUPPORTED_TYPES",
    "Coercer",
    "CoercionError",
    "build_coercer",
    "inline_coercion",
    "json_values",
    "show",
]


class _Absent:
    """Marker type for a cell that means "no value"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


# An empty cell is not null: the key is left out of the record altogether.
ABSENT: Final = _Absent()

Coercer = Callable[[Any], Any]


class CoercionError(ValueError):
    """A cell cannot become a value of its field's type; the text omits the field name."""


# ASCII digits only: int() would also take "٤٢" or "４２", which no customer means.
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
# Python float syntax minus underscores, inf and nan, which float() would take.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_BOOLEANS: Final = {
    "true": True,
    "yes": True,
    "1": True,
    "false": False,
    "no": False,
    "0": False,
}
# The words a boolean cell may hold, lower-case; the cell is matched case-insensitively.
BOOLEAN_WORDS: Final[Mapping[str, bool]] = MappingProxyType(_BOOLEANS)
_MIDNIGHT: Final = dt.time(0, 0)
_SHOW_LIMIT: Final = 60


def show(value: Any) -> str:
    """Render a value for an error message: repr for text, ISO for dates, cut if long."""
    if isinstance(value, (dt.date, dt.time)):
        text = value.isoformat()
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    # A field may hold a megabyte; the log line only needs enough to find it.
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _kind(value: Any) -> str:
    """Name the kind of a native value the way a spreadsheet user would."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dt.datetime):
        return "date-time"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time"
    return type(value).__name__


def _wrong_kind(value: Any, expected: str) -> CoercionError:
    """Build the error for a native cell of the wrong kind."""
    return CoercionError(f"expected {expected}, got a {_kind(value)} ({show(value)})")


# --- integer -------------------------------------------------------------


def _text_integer(text: str) -> int:
    """Parse "42", "+42", "-3"; reject decimals, exponents and anything else."""
    if _INTEGER.match(text) is None:
        raise CoercionError(f"{show(text)} is not an integer")
    try:
        return int(text)
    except ValueError:  # more digits than Python's int/str conversion limit
        raise CoercionError(f"{show(text)} is not an integer (too many digits)") from None


def _native_integer(value: Any) -> int:
    """Accept an int, or a float with no fractional part (Excel stores 42 as 42.0)."""
    if isinstance(value, bool):
        raise _wrong_kind(value, "an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise CoercionError(f"{show(value)} is not an integer")
    raise _wrong_kind(value, "an integer")


# --- number --------------------------------------------------------------


def _text_number(text: str) -> float:
    """Parse Python float syntax, refusing inf, nan and underscores."""
    if _NUMBER.match(text) is None:
        raise CoercionError(f"{show(text)} is not a number")
    number = float(text)
    if math.isinf(number):  # "1e999": JSON has no infinity
        raise CoercionError(f"{show(text)} is too large")
    return number


def _native_number(value: Any) -> int | float:
    """Accept an int or a finite float."""
    if isinstance(value, bool):
        raise _wrong_kind(value, "a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise CoercionError(f"{show(value)} is not a number")
    raise _wrong_kind(value, "a number")


# --- boolean -------------------------------------------------------------


def _text_boolean(text: str) -> bool:
    """Parse true/false/yes/no/1/0, in any case."""
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise CoercionError(f"{show(text)} is not a boolean (use true/false, yes/no or 1/0)") from None


def _native_boolean(value: Any) -> bool:
    """Accept a bool, or a numeric 0/1 cell (the same values "0"/"1" are as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise _wrong_kind(value, "true/false")


# --- strings -------------------------------------------------------------


def _as_datetime(value: dt.date) -> dt.datetime:
    """Promote a date to a midnight datetime; leave a datetime alone."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, _MIDNIGHT)


def _native_text(value: Any) -> str:
    """Render a native cell for a plain string field (an id, a name...)."""
    if isinstance(value, bool):
        raise _wrong_kind(value, "text")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _wrong_kind(value, "text")
        # Excel stores the id 12345 as 12345.0; "12345.0" would be silent damage.
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.date):  # SPEC 6: a date cell is a date-time outside date fields
        return _as_datetime(value).isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    raise _wrong_kind(value, "text")


def _native_date(value: Any) -> str:
    """Render a date cell as YYYY-MM-DD; a time of day other than midnight is an error."""
    if isinstance(value, dt.datetime):
        if value.time() != _MIDNIGHT:
            raise CoercionError(f"expected a date, got a date-time with a time of day ({show(value)})")
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise _wrong_kind(value, "a date (YYYY-MM-DD)")


def _native_date_time(value: Any) -> str:
    """Render a date or date-time cell as an RFC 3339 date-time."""
    if not isinstance(value, dt.date):
        raise _wrong_kind(value, "a date-time")
    moment = _as_datetime(value)
    if moment.tzinfo is None:
        # Excel cells carry no time zone; we read them as UTC, and say so with "Z".
        return moment.isoformat() + "Z"
    return moment.isoformat()


# --- JSON values (JSON Lines) ---------------------------------------------

_JSON_EXPECTED: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _json_type_error(value: Any, kind: str) -> CoercionError:
    """A JSON value the field's type does not take, named as JSON names it."""
    if isinstance(value, bool):
        got = f"JSON {'true' if value else 'false'}"
    elif isinstance(value, (int, float)):
        got = f"the JSON number {show(value)}"
    elif isinstance(value, list):
        got = "a JSON array"
    elif isinstance(value, dict):
        got = "a JSON object"
    else:
        got = f"a {type(value).__name__} ({show(value)})"
    return CoercionError(f"expected {_JSON_EXPECTED[kind]}, got {got}")


def _json_integer(value: Any) -> int:
    """An integer as it is; 42.0 is the same JSON number as 42 (JSON Schema draft 7 calls it an integer)."""
    if value.__class__ is int:
        return value  # type: ignore[no-any-return]
    if value.__class__ is float and value.is_integer():
        return int(value)
    raise _json_type_error(value, "integer")


def _json_number(value: Any) -> int | float:
    """A finite number as it is."""
    if value.__class__ is int or (value.__class__ is float and math.isfinite(value)):
        return value  # type: ignore[no-any-return]
    raise _json_type_error(value, "number")


def _json_boolean(value: Any) -> bool:
    """true or false as it is."""
    if value.__class__ is bool:
        return value  # type: ignore[no-any-return]
    raise _json_type_error(value, "boolean")


def _json_string(value: Any) -> str:
    """Only a JSON string is text: any other value is not (text is coerced before this)."""
    raise _json_type_error(value, "string")


_JSON_NATIVE: Final[dict[str, Callable[[Any], Any]]] = {
    "string": _json_string,
    "integer": _json_integer,
    "number": _json_number,
    "boolean": _json_boolean,
}
# The mark json_values sets: only this object, never a value a schema file could hold.
_JSON_KEY: Final = "x-json-values"
_JSON_MARK: Final = object()


def json_values(prop: dict[str, Any]) -> dict[str, Any]:
    """The property, marked so that build_coercer and inline_coercion (the generated code) coerce
    JSON values: a string as a cell, null as absent, any other value only as itself."""
    return {**prop, _JSON_KEY: _JSON_MARK}


# --- assembly ------------------------------------------------------------

_TEXT: Final[dict[str, Callable[[str], Any] | None]] = {
    "string": None,  # a stripped string is already the value
    "integer": _text_integer,
    "number": _text_number,
    "boolean": _text_boolean,
}
_NATIVE: Final[dict[str, Callable[[Any], Any]]] = {
    "integer": _native_integer,
    "number": _native_number,
    "boolean": _native_boolean,
}
_NATIVE_BY_FORMAT: Final[dict[str, Callable[[Any], Any]]] = {
    "date": _native_date,
    "date-time": _native_date_time,
}
SUPPORTED_TYPES: Final = frozenset(_TEXT)


def build_coercer(prop: dict[str, Any]) -> Coercer:
    """Build the coercer for one schema property; it returns a value, ABSENT, or raises CoercionError."""
    kind = prop["type"]
    text = _TEXT[kind]
    if prop.get(_JSON_KEY) is _JSON_MARK:
        native = _JSON_NATIVE[kind]
    elif kind == "string":
        native = _NATIVE_BY_FORMAT.get(prop.get("format", ""), _native_text)
    else:
        native = _NATIVE[kind]
    if text is None:
        return _string_coercer(native)
    return _typed_coercer(text, native)


def _string_coercer(native: Callable[[Any], Any]) -> Coercer:
    """Coercer for a string property: strip text, convert natives."""

    def coerce(value: Any) -> Any:
        if value.__class__ is not str:
            if value is None:
                return ABSENT
            if not isinstance(value, str):
                return native(value)
        return value.strip() or ABSENT

    return coerce


def _typed_coercer(text: Callable[[str], Any], native: Callable[[Any], Any]) -> Coercer:
    """Coercer for an integer, number or boolean property."""

    def coerce(value: Any) -> Any:
        if value.__class__ is not str:
            if value is None:
                return ABSENT
            if not isinstance(value, str):
                return native(value)
        value = value.strip()
        return text(value) if value else ABSENT

    return coerce


# --- inline coercion (the hot path) ----------------------------------------

# The classes a coerced value has on the fast path, per schema type.
EXACT_CLASSES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
# Plain digits this short convert with int()/float() exactly as the text parsers would, and
# stay far below both Python's int/str digit limit and float overflow.
_SHORT_DIGITS: Final = 18
# Each boolean word in the spellings a spreadsheet writes (true, True, TRUE): one dict lookup
# on the raw cell. Every key lower-cases to a word of BOOLEAN_WORDS, and has no white space.
_BOOLEAN_SPELLINGS: Final = {
    spelling: value for word, value in _BOOLEANS.items() for spelling in (word, word.capitalize(), word.upper())
}


class _Unusual(CoercionError):
    """The coercer returned a value of an unexpected class (a str subclass cell): take the slow path."""


def _unusual(value: Any) -> _Unusual:
    """Build the signal for a coerced value the fast path does not handle."""
    return _Unusual(f"unusual coerced value {show(value)}")


def inline_coercion(prop: dict[str, Any], cell: str, value: str, prefix: str) -> tuple[list[str], dict[str, Any]]:
    """Python source lines that coerce the variable `cell` into the variable `value` like build_coercer(prop).

    After the lines run, `value` holds exactly what build_coercer(prop)(cell) returns, and that is
    ABSENT or an instance of exactly one of EXACT_CLASSES[prop["type"]] (no subclass). Otherwise the
    lines raise CoercionError: when the coercer raises, and when it returns a value of another class
    (a str subclass cell...), which the caller handles on its slow path. The lines are not indented;
    the returned names (all starting with `prefix`) must be in the globals of the code that runs them.
    """
    kind = prop["type"]
    coerce, absent, unusual = f"{prefix}coerce", f"{prefix}absent", f"{prefix}unusual"
    names: dict[str, Any] = {coerce: build_coercer(prop), absent: ABSENT, unusual: _unusual}
    unexpected = " and ".join(f"{value}.__class__ is not {cls.__name__}" for cls in EXACT_CLASSES[kind])
    generic = [
        f"    {value} = {coerce}({cell})",
        f"    if {unexpected} and {value} is not {absent}:",
        f"        raise {unusual}({value})",
    ]
    if kind == "string":
        # Text is only stripped; an empty result is ABSENT (str.strip of a str is a str).
        return [f"if {cell}.__class__ is str:", f"    {value} = {cell}.strip() or {absent}", "else:", *generic], names
    if kind in ("integer", "number"):
        # Plain ASCII digits (no sign, no space) need neither the regex nor the strip.
        convert = "int" if kind == "integer" else "float"
        return [
            f"if {cell}.__class__ is str and {cell}.isascii() and {cell}.isdigit() and len({cell}) <= {_SHORT_DIGITS}:",
            f"    {value} = {convert}({cell})",
            "else:",
            *generic,
        ], names
    spellings = f"{prefix}spellings"
    names[spellings] = _BOOLEAN_SPELLINGS
    return [
        f"{value} = {spellings}.get({cell}) if {cell}.__class__ is str else None",
        f"if {value} is None:",
        *generic,
    ], names
