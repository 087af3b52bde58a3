"""Products: one JSON Schema per product, header mapping, coercion and validation (SPEC 6).

Two validators judge every record and must agree. The hot path asks
fastjsonschema for a verdict (a few µs per row); only a record it rejects is
run through jsonschema, whose per-keyword errors become messages a customer
can act on. Both use the same format functions (OUR_FORMATS), because their
built-in format checks differ and jsonschema's default checker silently
accepts `date-time` and `hostname` (see notes/throughput.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fastjsonschema
import jsonschema
from jsonschema import Draft7Validator, FormatChecker, ValidationError

from service.coerce import ABSENT, SUPPORTED_TYPES, Coercer, CoercionError, build_coercer, show
from service.errors import ConfigError, FileRejected, RowError, UnknownProduct

PRODUCT_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_MAX_NAME = 63  # a product name becomes a Postgres table name, which is cut at 63 bytes
_DRAFT7_URIS: Final = {"http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema"}

# --- formats ---------------------------------------------------------------
# Each function answers True for a non-string: the `type` keyword reports
# those, and fastjsonschema only calls format functions on strings anyway.

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
# Local part: 1-64 characters, none of them white space, control or "@";
# domain: at least two host-name labels. One regex, because it runs per row.
_EMAIL = re.compile(rf"[^\s@\x00-\x1f\x7f]{{1,64}}@({_LABEL}(?:\.{_LABEL})+)\Z")
# Ranges live in the regexes so that only days 29-31 need a calendar.
_YMD = r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_DATE = re.compile(rf"{_YMD}\Z")
_DATE_TIME = re.compile(
    rf"{_YMD}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)


def _hostname_ok(text: str) -> bool:
    """RFC 1123 host name: ASCII labels of 1-63 letters, digits, inner hyphens; 253 at most."""
    if len(text) > 253 or _HOSTNAME.match(text) is None:
        return False
    # RFC 3696 §2: a top-level label is never all-numeric, so "10.0.0.1" is not a host name.
    return not text.rpartition(".")[2].isdigit()


def is_hostname(value: object) -> bool:
    """Format `hostname`: RFC 1123; one label ("localhost") passes, a trailing dot does not."""
    return not isinstance(value, str) or _hostname_ok(value)


def is_email(value: object) -> bool:
    """Format `email`: one @, a local part without spaces, a dotted host-name domain."""
    if not isinstance(value, str):
        return True
    # 254: the longest path RFC 5321 allows.
    match = _EMAIL.match(value) if len(value) <= 254 else None
    return match is not None and not match.group(1).rpartition(".")[2].isdigit()


def _real_date(match: re.Match[str]) -> bool:
    """Tell whether a matched YYYY-MM-DD names a day that exists (2024-02-30 does not)."""
    year, month, day = match.group(1, 2, 3)
    if year == "0000":  # RFC 3339 allows it, Python (and most consumers) do not
        return False
    if day < "29":  # two-digit strings compare like numbers; every month has 28 days
        return True
    try:
        dt.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def is_date(value: object) -> bool:
    """Format `date`: YYYY-MM-DD naming a real calendar day."""
    if not isinstance(value, str):
        return True
    match = _DATE.match(value)
    return match is not None and _real_date(match)


def is_date_time(value: object) -> bool:
    """Format `date-time`: RFC 3339 on a real day; leap second 60 refused (few parsers take it)."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.match(value)
    return match is not None and _real_date(match)


OUR_FORMATS: Final[dict[str, Callable[[object], bool]]] = {
    "email": is_email,
    "hostname": is_hostname,
    "date": is_date,
    "date-time": is_date_time,
}
_FORMAT_WORDS: Final = {
    "email": "a valid email address",
    "hostname": "a valid hostname",
    "date": "a valid date (YYYY-MM-DD)",
    "date-time": "a valid date-time (RFC 3339, e.g. 2024-05-01T09:30:00Z)",
}

# --- the two validators ----------------------------------------------------

# fastjsonschema rewrites every unescaped "$" in a pattern to "\Z" (ECMA-262
# "$" never matches before a trailing newline; Python's does). jsonschema
# gets the same rewrite, or "FR\n" would pass one validator and fail the other.
_DOLLAR = re.compile(r"(?<!\\)\$")


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a schema pattern the way fastjsonschema does."""
    return re.compile(_DOLLAR.sub(r"\\Z", pattern))


def _pattern_keyword(
    validator: Draft7Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """Replacement for jsonschema's `pattern` keyword, anchored like fastjsonschema."""
    if validator.is_type(instance, "string") and _pattern_regex(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_FullValidator = jsonschema.validators.extend(Draft7Validator, {"pattern": _pattern_keyword})


def format_checker() -> FormatChecker:
    """A jsonschema FormatChecker that knows exactly OUR_FORMATS and nothing else."""
    checker = FormatChecker(formats=())
    for name, function in OUR_FORMATS.items():
        checker.checks(name)(function)
    return checker


def compile_fast(schema: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """Compile the hot-path validator; it raises fastjsonschema.JsonSchemaException when invalid."""
    return fastjsonschema.compile(schema, formats=OUR_FORMATS)


def full_validator(schema: dict[str, Any]) -> Draft7Validator:
    """Build the explaining validator, asserting OUR_FORMATS like the fast one."""
    return _FullValidator(schema, format_checker=format_checker())


# --- messages ----------------------------------------------------------------


def _describe(error: ValidationError, field: str) -> str:
    """Turn one jsonschema error about a field into a sentence a customer can act on."""
    keyword, limit, value, schema = error.validator, error.validator_value, error.instance, error.schema
    if keyword == "format":
        return f"{field}: {show(value)} is not {_FORMAT_WORDS.get(limit, limit)}"
    if keyword == "enum":
        return f"{field}: {show(value)} is not one of {', '.join(str(v) for v in limit)}"
    if keyword == "minLength":
        return f"{field} must not be empty" if limit == 1 else f"{field}: at least {limit} characters needed"
    if keyword == "maxLength":
        return f"{field}: {len(value)} characters, at most {limit} allowed"
    if keyword == "minimum":
        return f"{field}: {show(value)} is less than the minimum of {limit}"
    if keyword == "maximum":
        return f"{field}: {show(value)} is more than the maximum of {limit}"
    if keyword == "pattern":
        expected = schema.get("description") or f"text matching {limit}"
        return f"{field}: {show(value)} is not valid; expected {expected}"
    if keyword == "type":
        return f"{field}: expected a value of type {limit}, got {show(value)}"
    return f"{field}: {error.message}"


# --- header mapping ---------------------------------------------------------


@dataclass(frozen=True)
class ColumnMap:
    """How the columns of a header map to a product's fields."""

    fields: tuple[str | None, ...]  # per column index: the schema property, or None if ignored
    unknown: tuple[str, ...]  # header names that match no property (trimmed, case kept)
    blank: tuple[int, ...]  # 1-based positions of blank header names (ignored columns)


def _header_key(name: str) -> str:
    """Normalise a header name or key for matching: trimmed, case-folded."""
    return name.strip().casefold()


# --- products ----------------------------------------------------------------


class Product:
    """One importable product: its schema, its header rules and its row check."""

    __slots__ = ("_by_key", "_coercers", "_fast", "_full", "_order", "fields", "name", "required", "schema")

    def __init__(self, name: str, schema: dict[str, Any]) -> None:
        try:
            _check_supported(schema)
        except ConfigError as exc:
            raise ConfigError(f"product {name}: {exc}") from None
        self.name = name
        self.schema = schema
        properties: dict[str, Any] = schema["properties"]
        self.fields: tuple[str, ...] = tuple(properties)
        self.required: tuple[str, ...] = tuple(schema.get("required", ()))
        self._by_key = {_header_key(field): field for field in self.fields}
        self._coercers: dict[str, Coercer] = {f: build_coercer(p) for f, p in properties.items()}
        self._order = {field: index for index, field in enumerate(self.fields)}
        self._fast = compile_fast(schema)
        self._full = full_validator(schema)

    def __repr__(self) -> str:
        return f"Product({self.name!r})"

    def map_header(self, names: list[str]) -> ColumnMap:
        """Match header names to fields; duplicates and missing required columns reject the file."""
        fields: list[str | None] = []
        unknown: list[str] = []
        blank: list[int] = []
        seen: dict[str, int] = {}
        for position, written in enumerate(names, start=1):
            # A spreadsheet header cell may be empty (None) or a number.
            name = ("" if written is None else str(written)).strip()
            if not name:
                blank.append(position)
                fields.append(None)
                continue
            first = seen.setdefault(name.casefold(), position)
            if first != position:
                raise FileRejected(f"duplicate column {name!r} (columns {first} and {position})", line=1)
            field = self._by_key.get(name.casefold())
            fields.append(field)
            if field is None:
                unknown.append(name)
        self._require(fields)
        return ColumnMap(tuple(fields), tuple(unknown), tuple(blank))

    def _require(self, present: Iterable[str | None]) -> None:
        """Reject the file if a required field has no column."""
        have = set(present)
        missing = [field for field in self.required if field not in have]
        if missing:
            raise FileRejected(f"missing required column(s): {', '.join(missing)}", line=1)

    def map_keys(self, keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """Map the keys of a key=value record to fields; return the mapping and the unknown keys."""
        mapping: dict[str, str] = {}
        unknown: list[str] = []
        for key in keys:
            field = self._by_key.get(_header_key(key))
            if field is None:
                unknown.append(key)
            else:
                mapping[key] = field
        return mapping, unknown

    def check(self, source_row: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[RowError]]:
        """Coerce and validate one record: (data, []) if valid, else (None, errors)."""
        data: dict[str, Any] = {}
        failed: dict[str, str] | None = None
        coercers = self._coercers
        for name, value in raw.items():
            coerce = coercers.get(name)
            if coerce is None:  # not a property: kept so validation names it
                if value is not None:
                    data[name] = value
                continue
            try:
                value = coerce(value)
            except CoercionError as exc:
                if failed is None:
                    failed = {}
                failed[name] = f"{name}: {exc}"
                continue
            if value is not ABSENT:
                data[name] = value
        if failed is None:
            try:
                self._fast(data)
                return data, []
            except fastjsonschema.JsonSchemaException as exc:
                return None, self._explain(source_row, data, {}, str(exc))
        return None, self._explain(source_row, data, failed, "")

    def _explain(self, source_row: int, data: dict[str, Any], failed: dict[str, str], verdict: str) -> list[RowError]:
        """List every problem of a rejected record, in field order."""
        found = dict(failed)  # field (or "" for the record) -> message
        for error in self._full.iter_errors(data):
            for field, message in self._messages(error, data):
                if field not in found:  # one message per field: the coercion one wins
                    found[field] = message
        if not found:
            # The validators disagree; never let a rejected row go unexplained.
            found[""] = f"record rejected: {verdict}"
        ordered = sorted(found.items(), key=lambda item: self._order.get(item[0], len(self._order)))
        return [RowError(source_row, field or None, message) for field, message in ordered]

    def _messages(self, error: ValidationError, data: dict[str, Any]) -> Iterator[tuple[str, str]]:
        """Yield (field, message) pairs for one jsonschema error."""
        if error.validator == "required":
            for field in error.validator_value:
                if field not in data:
                    yield field, f"{field} is required"
        elif error.validator == "additionalProperties":
            for field in data:
                if field not in self._order:
                    yield field, f"{field} is not a field of {self.name}"
        elif error.path:
            field = str(error.path[0])
            yield field, _describe(error, field)
        else:
            yield "", error.message


def _check_supported(schema: Any) -> None:
    """Refuse a schema this module cannot coerce for, or whose formats it would not assert."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ConfigError("the top level must be an object schema")
    if "$schema" in schema and schema["$schema"] not in _DRAFT7_URIS:
        raise ConfigError("$schema must be JSON Schema draft 7")
    try:
        Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(exc.message) from None
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise ConfigError("no properties")
    for field, prop in properties.items():
        _check_property(field, prop)
    if len({_header_key(field) for field in properties}) != len(properties):
        raise ConfigError("two properties differ only in case")
    if not set(schema.get("required", ())) <= set(properties):
        raise ConfigError("a required field is not a property")


def _check_property(field: str, prop: Any) -> None:
    """Refuse a property without one supported type, or with a format we do not check."""
    kind = prop.get("type") if isinstance(prop, dict) else None
    if not isinstance(kind, str) or kind not in SUPPORTED_TYPES:
        raise ConfigError(f"{field} needs a type among {', '.join(sorted(SUPPORTED_TYPES))}")
    # An unknown format would be silently accepted: refuse it instead of pretending.
    if "format" in prop and prop["format"] not in OUR_FORMATS:
        raise ConfigError(f"{field} has format {prop['format']!r}, which is not checked")
    if "pattern" in prop:
        try:
            _pattern_regex(prop["pattern"])
        except re.error as exc:
            raise ConfigError(f"{field} pattern: {exc}") from None


class ProductRegistry:
    """The products found in the schemas directory, by name."""

    def __init__(self, products: dict[str, Product]) -> None:
        self._products = products

    @classmethod
    def load(cls, schemas_dir: Path) -> ProductRegistry:
        """Load one Product per schemas/<name>.json whose name is a valid product name."""
        if not schemas_dir.is_dir():
            raise ConfigError(f"{schemas_dir}: not a directory of product schemas")
        products: dict[str, Product] = {}
        for path in sorted(schemas_dir.glob("*.json")):
            if PRODUCT_NAME.match(path.stem) is None or not path.is_file():
                continue
            if len(path.stem.encode()) > _MAX_NAME:
                raise ConfigError(f"{path}: product name longer than {_MAX_NAME} characters")
            try:
                products[path.stem] = Product(path.stem, _read_schema(path))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return cls(products)

    def get(self, name: str) -> Product:
        """Return the named product, or raise UnknownProduct listing the known ones."""
        try:
            return self._products[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "none"
            raise UnknownProduct(f"unknown product type {name!r}; known: {known}", field="product_type") from None

    def names(self) -> list[str]:
        """The product names, sorted."""
        return sorted(self._products)


def _read_schema(path: Path) -> Any:
    """Read one schema file, turning unreadable or malformed JSON into a ConfigError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
