"""Products: one JSON Schema per product, header mapping, coercion and validation (SPEC 6).

Three checks judge records, and must agree:

* the hot path: per product and per order of a record's fields, one Python function
  generated from the schema, which coerces and checks every cell in one pass and returns
  the record (or its JSON text). It knows a fixed set of keywords (_compilable); when it
  cannot prove a record valid it answers None and the record takes the reference path.
* the reference path (Product.reference_check): the coercers, then fastjsonschema for a
  verdict; a record it rejects is run through jsonschema, whose per-keyword errors become
  messages a customer can act on.

All use the same format functions (OUR_FORMATS), because the validators' built-in
format checks differ and jsonschema's default checker silently accepts `date-time`
and `hostname` (see notes/throughput.md). tests/unit/test_validators_agree.py holds
the proofs of agreement.
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

from service.errors import ConfigError, FileRejected, RowError, UnknownProduct
from service.schema.coerce import (
    ABSENT,
    SUPPORTED_TYPES,
    Coercer,
    CoercionError,
    build_coercer,
    inline_coercion,
    show,
)

PRODUCT_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_MAX_NAME = 63  # a product name becomes a Postgres table name, which is cut at 63 bytes
_DRAFT7_URIS: Final = {"http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema"}

# --- formats ---------------------------------------------------------------
# Each is_* function answers True for a non-string: the `type` keyword reports
# those, and fastjsonschema only calls format functions on strings anyway. The
# *_text functions behind them take a str; the hot path calls those directly.

# A label: 1-63 letters, digits and hyphens, neither first nor last a hyphen. The lookarounds
# are faster than the plain "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", and mean the same.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
# Local part: 1-64 characters, none of them white space, control or "@" (so the possessive
# "+" changes nothing but the speed); domain: at least two host-name labels.
_EMAIL = re.compile(rf"[^\s@\x00-\x1f\x7f]{{1,64}}+@{_LABEL}(?:\.{_LABEL})+\Z")
# Ranges live in the regexes so that only days 29-31 need a calendar. Year 0000:
# RFC 3339 allows it, Python (and most consumers) do not.
_YMD = r"(?!0000)([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_DATE = re.compile(rf"{_YMD}\Z")
_DATE_TIME = re.compile(
    rf"{_YMD}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)


def _numeric_top_label(text: str) -> bool:
    """Tell whether the last label of a matched host name is all digits ("10.0.0.1").

    RFC 3696 §2: a top-level label is never all-numeric. The regexes leave a letter or a
    digit last, and a letter sorts after "9", so most names are cleared by one comparison.
    """
    return text[-1] <= "9" and text.rpartition(".")[2].isdigit()


def hostname_text(text: str) -> bool:
    """RFC 1123 host name: ASCII labels of 1-63 letters, digits, inner hyphens; 253 at most."""
    return len(text) <= 253 and _HOSTNAME.match(text) is not None and not _numeric_top_label(text)


def email_text(text: str) -> bool:
    """One @, a local part without spaces, a dotted host-name domain; 254 at most (RFC 5321)."""
    return len(text) <= 254 and _EMAIL.match(text) is not None and not _numeric_top_label(text)


def _real_date(match: re.Match[str]) -> bool:
    """Tell whether a matched YYYY-MM-DD names a day that exists (2024-02-30 does not)."""
    year, month, day = match.group(1, 2, 3)
    try:
        dt.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def date_text(text: str) -> bool:
    """YYYY-MM-DD naming a real calendar day."""
    match = _DATE.match(text)
    # Characters 8-9 are the day; two-digit strings compare like numbers; every month has 28 days.
    return match is not None and (text[8:10] < "29" or _real_date(match))


def date_time_text(text: str) -> bool:
    """RFC 3339 on a real day; leap second 60 refused (few parsers take it)."""
    match = _DATE_TIME.match(text)
    return match is not None and (text[8:10] < "29" or _real_date(match))


def is_hostname(value: object) -> bool:
    """Format `hostname`: RFC 1123; one label ("localhost") passes, a trailing dot does not."""
    return not isinstance(value, str) or hostname_text(value)


def is_email(value: object) -> bool:
    """Format `email`: one @, a local part without spaces, a dotted host-name domain."""
    return not isinstance(value, str) or email_text(value)


def is_date(value: object) -> bool:
    """Format `date`: YYYY-MM-DD naming a real calendar day."""
    return not isinstance(value, str) or date_text(value)


def is_date_time(value: object) -> bool:
    """Format `date-time`: RFC 3339 on a real day; leap second 60 refused (few parsers take it)."""
    return not isinstance(value, str) or date_time_text(value)


OUR_FORMATS: Final[dict[str, Callable[[object], bool]]] = {
    "email": is_email,
    "hostname": is_hostname,
    "date": is_date,
    "date-time": is_date_time,
}
# The same checks for a value known to be a str (the hot path).
TEXT_FORMATS: Final[dict[str, Callable[[str], bool]]] = {
    "email": email_text,
    "hostname": hostname_text,
    "date": date_text,
    "date-time": date_time_text,
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
    return _sentence(field, str(error.validator), error.validator_value, error.instance, error.schema, error.message)


def _sentence(field: str, keyword: str, limit: Any, value: Any, schema: dict[str, Any], message: str) -> str:
    """The sentence for a field's value failing one keyword (limit: its value in the schema)."""
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
    return f"{field}: {message}"


# --- header mapping ---------------------------------------------------------


@dataclass(frozen=True)
class ColumnMap:
    """How the columns of a header map to a product's fields."""

    fields: tuple[str | None, ...]  # per column index: the schema property, or None if ignored
    unknown: tuple[str, ...]  # header names that match no property (trimmed, case kept)
    blank: tuple[int, ...]  # 1-based positions of blank header names (ignored columns)
    # (header name, field) for each column matched through an x-aliases entry, in column order;
    # the name is as written in the file, trimmed (case and inner spaces kept), like `unknown`.
    aliases: tuple[tuple[str, str], ...] = ()


def _header_key(name: str) -> str:
    """Normalise a header name, key or alias for matching: trimmed, runs of inner white space
    made one space, case-folded ("E-Mail  Address " matches "e-mail address")."""
    return " ".join(name.split()).casefold()


# --- JSON text ----------------------------------------------------------------


def _make_encoder() -> Callable[[Any], str]:
    """Build once what json.dumps(value, ensure_ascii=False) builds on every call."""
    reference = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder, built once
        return reference.encode
    # The arguments JSONEncoder.iterencode passes, except the circular-reference
    # markers (None): a shared dict would not be thread-safe. Output is identical for
    # any acyclic value; a cyclic one raises RecursionError instead of ValueError.
    iterencode = make(
        None,
        reference.default,
        json.encoder.encode_basestring,
        None,
        reference.key_separator,
        reference.item_separator,
        reference.sort_keys,
        reference.skipkeys,
        reference.allow_nan,
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(iterencode(value, 0))

    return encode


encode_json: Final = _make_encoder()

# --- the hot path: one generated function per product and field order ---------

_ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "readOnly", "writeOnly"}
)
# Keywords that only judge instances of one JSON type; on other types both validators ignore them.
_STRING_ONLY: Final = frozenset({"minLength", "maxLength", "pattern"})
_NUMBER_ONLY: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_ARRAY_ONLY: Final = frozenset({"items", "additionalItems", "maxItems", "minItems", "uniqueItems", "contains"})
_OBJECT_ONLY: Final = frozenset(
    {
        "properties",
        "patternProperties",
        "additionalProperties",
        "required",
        "dependencies",
        "propertyNames",
        "maxProperties",
        "minProperties",
    }
)
# Per property type: the keywords the generated code checks...
_CHECKED: Final = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format", "enum"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
}
# ... and all it accepts: those, keywords that cannot apply to the type, and "format",
# whose functions accept every non-string (is_email(42) is True).
_PROPERTY_KEYWORDS: Final = {
    "string": _CHECKED["string"] | _NUMBER_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
    "integer": _CHECKED["integer"] | {"format"} | _STRING_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
    "number": _CHECKED["number"] | {"format"} | _STRING_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
    "boolean": {"format"} | _STRING_ONLY | _NUMBER_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
}
# "definitions" only matter through "$ref", which is not among them.
_TOP_KEYWORDS: Final = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "definitions",
    *_ANNOTATIONS,
    *_STRING_ONLY,
    *_NUMBER_ONLY,
    *_ARRAY_ONLY,
}
# The failure test of each compiled keyword, as jsonschema words it (v: the value, x: the limit).
_FAILS: Final = {
    "minLength": "len({v}) < {x}",
    "maxLength": "len({v}) > {x}",
    "minimum": "{v} < {x}",
    "maximum": "{v} > {x}",
    "exclusiveMinimum": "{v} <= {x}",
    "exclusiveMaximum": "{v} >= {x}",
    "pattern": "{x}({v}) is None",
    "format": "not {x}({v})",
    "enum": "{v} not in {x}",
}
# The failure tests as functions of (value, limit), for explaining a rejected record (_why).
_TESTS: Final = {k: eval(f"lambda v, x: {t.format(v='v', x='x')}") for k, t in _FAILS.items()}  # noqa: S307
_WORDED: Final = frozenset(_FAILS) - {"exclusiveMinimum", "exclusiveMaximum"}  # _sentence words them itself
_MAX_PLANS = 256  # field orders remembered per product (a key=value file may vary them per record)


def _keywords(schema: dict[str, Any]) -> set[str]:
    """A schema's keywords, less this service's own `x-` extensions (validators ignore them)."""
    return {name for name in schema if not name.startswith("x-")}


def _compilable(schema: dict[str, Any]) -> bool:
    """Tell whether the generated code checks every keyword of a (supported) schema."""
    if not _keywords(schema) <= _TOP_KEYWORDS or not isinstance(schema.get("additionalProperties", False), bool):
        return False
    for prop in schema["properties"].values():
        kind = prop["type"]
        if not _keywords(prop) - {"type"} - _ANNOTATIONS <= _PROPERTY_KEYWORDS[kind]:
            return False
    return True


def _limit(prop: dict[str, Any], keyword: str) -> Any:
    """The object the generated code compares with for one keyword of one property."""
    value = prop[keyword]
    if keyword == "pattern":
        return _pattern_regex(value).search
    if keyword == "format":
        return TEXT_FORMATS[value]
    if keyword == "enum":  # a str equals only a str, in jsonschema as in Python
        return frozenset(member for member in value if isinstance(member, str))
    return value


def _why(field: str, prop: dict[str, Any]) -> Callable[[Any], str | None] | None:
    """What is wrong with a coerced value of the field, by the generated code's tests: the
    sentence of its first failing keyword in the schema's order (as jsonschema would say
    it), or None when it passes. None instead of a function: a keyword _sentence cannot word."""
    tests = []
    for keyword, limit in prop.items():
        if keyword in _CHECKED[prop["type"]]:
            if keyword not in _WORDED:
                return None
            tests.append((keyword, limit, _limit(prop, keyword), _TESTS[keyword]))

    def why(value: Any) -> str | None:
        for keyword, limit, compared, fails in tests:
            if fails(value, compared):
                return _sentence(field, keyword, limit, value, prop, "")
        return None

    return why


def _fstring(pieces: list[tuple[str, str]]) -> str:
    """Source of an f-string from ("text", literal) and ("code", expression) pieces."""
    template = "".join(
        text.replace("{", "{{").replace("}", "}}") if kind == "text" else "{" + text + "}" for kind, text in pieces
    )
    return "f" + repr(template)


class _Plan:
    """The generated functions for one order of fields: they take the cells positionally."""

    __slots__ = ("data", "json", "source")

    def __init__(self, product: Product, keys: tuple[str, ...]) -> None:
        properties: dict[str, Any] = product.schema["properties"]
        names: dict[str, Any] = {"_CoercionError": CoercionError, "_ABSENT": ABSENT, "_TF": ("false", "true")}
        names["_str"] = json.encoder.encode_basestring
        cells = ", ".join(f"r{i}" for i in range(len(keys)))
        body = ["    try:"]
        checks: list[str] = []
        optional: list[int] = []
        for i, key in enumerate(keys):
            prop = properties[key]
            kind = prop["type"]
            lines, more = inline_coercion(prop, f"r{i}", f"v{i}", f"_{i}_")
            names.update(more)
            body += ["        " + line for line in lines]
            fails = []
            for keyword in sorted(_CHECKED[kind] & prop.keys()):
                names[f"_{i}_{keyword}"] = _limit(prop, keyword)
                fails.append(_FAILS[keyword].format(v=f"v{i}", x=f"_{i}_{keyword}"))
            if key in product.required:
                checks.append(f"    if v{i} is _ABSENT: return None")
            else:
                optional.append(i)
            if fails:
                guard = "" if key in product.required else f"v{i} is not _ABSENT and "
                checks.append(f"    if {guard}({' or '.join(fails)}): return None")
        body += ["    except _CoercionError:", "        return None", *checks]
        any_absent = " or ".join(f"v{i} is _ABSENT" for i in optional) or "False"

        def rendered(i: int) -> str:
            kind = properties[keys[i]]["type"]
            if kind == "string":
                return f"_str(v{i})"
            if kind == "boolean":
                return f"_TF[v{i}]"
            return f"v{i}!r"  # an exact int or float: json writes its repr

        def member(i: int) -> list[tuple[str, str]]:
            return [("text", json.encoder.encode_basestring(keys[i]) + ": "), ("code", rendered(i))]

        data = [f"def data({cells}):", *body, f"    if {any_absent}:", "        data = {}"]
        text = [f"def text({cells}):", *body, f"    if {any_absent}:", "        parts = []"]
        for i, key in enumerate(keys):
            indent = f"        if v{i} is not _ABSENT: " if i in optional else "        "
            data.append(f"{indent}data[{key!r}] = v{i}")
            text.append(f"{indent}parts.append({_fstring(member(i))})")
        data += [
            "        return data",
            "    return {" + ", ".join(f"{key!r}: v{i}" for i, key in enumerate(keys)) + "}",
        ]
        everything: list[tuple[str, str]] = [("text", "{")]
        for i in range(len(keys)):
            everything += ([("text", ", ")] if i else []) + member(i)
        text += ['        return "{" + ", ".join(parts) + "}"', f"    return {_fstring(everything + [('text', '}')])}"]
        self.source = "\n".join(data + text) + "\n"
        exec(compile(self.source, f"<{product.name} fields {', '.join(keys)}>", "exec"), names)  # noqa: S102
        self.data: Callable[..., dict[str, Any] | None] = names["data"]
        self.json: Callable[..., str | None] = names["text"]


# --- products ----------------------------------------------------------------


class Product:
    """One importable product: its schema, its header rules and its row check."""

    __slots__ = (
        "_by_key",
        "_canonical",
        "_coercers",
        "_compilable",
        "_fast",
        "_alone",
        "_full",
        "_why",
        "_order",
        "_plans",
        "fields",
        "key",
        "name",
        "required",
        "schema",
    )

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
        # The field upsert and replace match rows by (SPEC 12); None: only append is possible.
        self.key: str | None = schema.get("x-key")
        # Normalised header name -> field, for names and aliases; _canonical: the names alone.
        self._canonical = frozenset(_header_key(field) for field in self.fields)
        self._by_key = {
            _header_key(alias): field for field, prop in properties.items() for alias in prop.get("x-aliases", ())
        }
        self._by_key.update((_header_key(field), field) for field in self.fields)
        self._coercers: dict[str, Coercer] = {f: build_coercer(p) for f, p in properties.items()}
        self._order = {field: index for index, field in enumerate(self.fields)}
        self._fast = compile_fast(schema)
        self._full = full_validator(schema)
        # Each property alone, for explaining a rejected record cheaply (see _explain); None
        # when a property cannot stand alone (a $ref into the schema's definitions...).
        self._alone: dict[str, Any] | None
        try:
            self._alone = {field: _alone(prop) for field, prop in properties.items()}
        except Exception:  # fastjsonschema and jsonschema raise their own kinds
            self._alone = None
        self._compilable = _compilable(schema)
        # Per field, the cheapest explanation of a bad value (see _explain); only when the
        # generated tests are the whole schema of the field.
        self._why = {field: _why(field, prop) for field, prop in properties.items()} if self._compilable else None
        # Field order of a record (its keys, in order) -> generated functions, or None: no fast path.
        self._plans: dict[tuple[Any, ...], _Plan | None] = {}

    def __repr__(self) -> str:
        return f"Product({self.name!r})"

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
            key = _header_key(name)
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
        missing = [field for field in self.required if field not in have]
        if missing:
            raise FileRejected(f"missing required column(s): {', '.join(missing)}", line=1)

    def map_keys(self, keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """Map the keys of key=value records to fields (names or aliases), returning the mapping
        and the unknown keys; two keys for one field reject the file (FileRejected, no line)."""
        mapping: dict[str, str] = {}
        unknown: list[str] = []
        taken: dict[str, str] = {}  # field -> the key that maps to it
        for key in keys:
            field = self._by_key.get(_header_key(key))
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
        return sorted((key, field) for key, field in mapping.items() if _header_key(key) not in self._canonical)

    def check(self, source_row: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[RowError]]:
        """Coerce and validate one record: (data, []) if valid, else (None, errors).

        raw maps fields to cells, in the record's order, which data keeps.
        """
        try:
            plan = self._plans[tuple(raw)]
        except KeyError:
            plan = self._plan(raw)
        if plan is not None:
            data = plan.data(*raw.values())
            if data is not None:
                return data, []
        return self.reference_check(source_row, raw)

    def check_json(self, source_row: int, raw: dict[str, Any]) -> tuple[str | None, list[RowError]]:
        """Like check, but a valid record comes back as its JSON text (see encode)."""
        try:
            plan = self._plans[tuple(raw)]
        except KeyError:
            plan = self._plan(raw)
        if plan is not None:
            text = plan.json(*raw.values())
            if text is not None:
                return text, []
        data, errors = self.reference_check(source_row, raw)
        return (None if data is None else encode_json(data)), errors

    @staticmethod
    def encode(data: dict[str, Any]) -> str:
        """Exactly json.dumps(data, ensure_ascii=False), without building an encoder per call."""
        return encode_json(data)

    def fast_data(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The hot path alone: check's data for a record it proves valid, else None (slow path)."""
        plan = self._plan(raw)
        return None if plan is None else plan.data(*raw.values())

    def fast_json(self, raw: dict[str, Any]) -> str | None:
        """The hot path alone: check_json's text for a record it proves valid, else None (slow path)."""
        plan = self._plan(raw)
        return None if plan is None else plan.json(*raw.values())

    def _plan(self, raw: dict[str, Any]) -> _Plan | None:
        """The generated functions for the order of raw's fields, built on first sight (None: none)."""
        keys = tuple(raw)
        if keys in self._plans:
            return self._plans[keys]
        if len(self._plans) >= _MAX_PLANS:
            return None  # a file whose records vary their fields endlessly: the slow path
        properties = self.schema["properties"]
        plan = None  # an unknown or a missing required field never passes: no fast path
        if (
            self._compilable
            and all(key.__class__ is str and key in properties for key in keys)
            and set(self.required) <= set(keys)
        ):
            plan = _Plan(self, keys)
        self._plans[keys] = plan
        return plan

    def reference_check(self, source_row: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[RowError]]:
        """What check answers, the slow way: the coercers, fastjsonschema, and jsonschema's messages."""
        data, failed = self.coerce(raw)
        if failed is None:
            try:
                self._fast(data)
                return data, []
            except fastjsonschema.JsonSchemaException as exc:
                return None, self._explain(source_row, data, {}, str(exc))
        return None, self._explain(source_row, data, failed, "")

    def coerce(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str] | None]:
        """Coerce each cell: (the data, the coercion message of each field that failed or None)."""
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
        return data, failed

    def _explain(self, source_row: int, data: dict[str, Any], failed: dict[str, str], verdict: str) -> list[RowError]:
        """List every problem of a rejected record, in field order: what `explain_fully` says, cheaper.

        jsonschema walks every property of the record to build its messages (about 40 us a
        row). When the record has every required field and no unknown one, only properties
        can be wrong: each present one is checked alone, by the generated code's tests worded
        like _describe (_why, about 4 us a row in all) or, for a field they do not cover, by
        its compiled validator with jsonschema explaining it if it fails.
        """
        alone, why = self._alone, self._why or {}
        missing = any(field not in data and field not in failed for field in self.required)
        if missing or any(field not in self._order for field in data):
            return self.explain_fully(source_row, data, failed, verdict)
        found = dict(failed)
        for field, value in data.items():
            say = why.get(field)
            if say is not None:  # the generated code's own tests, worded (about 1 us)
                message = say(value)
                if message is not None:
                    found[field] = message
                continue
            if alone is None:
                return self.explain_fully(source_row, data, failed, verdict)
            fast, full = alone[field]
            try:
                fast({field: value})
            except fastjsonschema.JsonSchemaException:
                for error in full.iter_errors({field: value}):
                    for name, message in self._messages(error, data):
                        found.setdefault(name, message)
        if len(found) == len(failed) and not failed:
            return self.explain_fully(source_row, data, failed, verdict)  # nothing found: ask the whole schema
        ordered = sorted(found.items(), key=lambda item: self._order.get(item[0], len(self._order)))
        return [RowError(source_row, field or None, message) for field, message in ordered]

    def explain_fully(
        self, source_row: int, data: dict[str, Any], failed: dict[str, str], verdict: str
    ) -> list[RowError]:
        """List every problem of a rejected record, in field order, with jsonschema on the whole record."""
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


def _alone(prop: dict[str, Any]) -> tuple[Callable[[dict[str, Any]], Any], Draft7Validator]:
    """The fast and the explaining validator of an object schema with this one property."""
    schema = {"type": "object", "properties": {"_": prop}}
    fast, full = compile_fast(schema), full_validator(schema)

    def rename(value: dict[str, Any]) -> Any:
        return fast({"_": next(iter(value.values()))})

    class Renamed:
        """full_validator under the field's own name, so error paths name the field."""

        def iter_errors(self, value: dict[str, Any]) -> Iterator[ValidationError]:
            ((field, item),) = value.items()
            for error in full.iter_errors({"_": item}):
                error.path.popleft()
                error.path.appendleft(field)
                yield error

    return rename, Renamed()  # type: ignore[return-value]


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
        raise ConfigError("two properties differ only in case or white space")
    _check_aliases(properties)
    if not set(schema.get("required", ())) <= set(properties):
        raise ConfigError("a required field is not a property")
    key = schema.get("x-key")
    if key is not None and (key not in schema.get("required", ()) or properties[key].get("type") != "string"):
        # Upsert and replace match rows by this value: every valid row must carry it, as text.
        raise ConfigError(f"x-key {key!r} must name a required string property")


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


def _check_aliases(properties: dict[str, Any]) -> None:
    """Refuse an `x-aliases` that is not a list of non-empty strings, or an alias that matches
    another property's name or alias: a header column must map to one field only."""
    owners = {_header_key(field): ("the name", field) for field in properties}
    for field, prop in properties.items():
        aliases = prop.get("x-aliases", [])
        if not isinstance(aliases, list):
            raise ConfigError(f"property {field}: x-aliases must be a list of non-empty strings, not {aliases!r}")
        for alias in aliases:
            if not isinstance(alias, str) or not alias.strip():
                raise ConfigError(f"property {field}: alias {alias!r} in x-aliases is not a non-empty string")
            what, owner = owners.setdefault(_header_key(alias), ("an alias", field))
            if owner != field:
                raise ConfigError(
                    f"property {field}: alias {alias!r} is ambiguous: it is also {what} of property {owner}"
                )


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
