"""The fast validator (verdict) and the full one (messages) must agree on every record.

A row the fast one rejects but the full one accepts would be logged with no
reason; the other way round, a bad row would be stored. Both are given the
same format functions, and these tests throw generated records at both.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from service.schema import products as products_module
from service.schema.products import Product, ProductRegistry
from service.schema.validators import compile_fast, full_validator

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
PRODUCTS = sorted(path.stem for path in SCHEMAS.glob("*.json"))
REGISTRY = ProductRegistry.load(SCHEMAS)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings on the edge of some format, type or pattern, all in one pool so
# that every field also gets values meant for another one.
EDGES = [
    "",
    " ",
    "\n",
    "\x00",
    "a@b",
    "a@b.c",
    "bob@example.com",
    "bob@10.0.0.1",
    "x@-a.com",
    "a b@c.de",
    "a@b.c\n",
    "localhost",
    "localhost\n",
    "1.2.3.4",
    "example.com.",
    "-bad-.com",
    "bücher.de",
    "exa mple.com",
    "2024-02-29",
    "2024-02-30",
    "2023-02-29",
    "0000-01-01",
    "2024-01-05\n",
    "20240105",
    "2024-W01-1",
    "2024-05-01T09:30:00Z",
    "2024-05-01t09:30:00.5z",
    "2024-05-01 09:30:00Z",
    "2024-13-45T99:00:00Z",
    "2024-12-31T23:59:60Z",
    "2024-05-01T09:30:00+24:00",
    "2024-05-01T09:30:00Z\n",
    "FR",
    "FR\n",
    "fr",
    "FRA",
    "F",
    "student",
    "Student",
    "teacher\n",
    "x" * 100,
    "x" * 101,
    "١٢",
]

edge_text = st.sampled_from(EDGES)
formatish_text = st.one_of(
    st.from_regex(r"\A[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}\Z"),
    st.from_regex(
        r"\A[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,3})?"
        r"([Zz]|[+-][0-2][0-9]:[0-6][0-9])?\n?\Z"
    ),
    st.from_regex(r"\A[a-zA-Z0-9.+ -]{0,6}@[a-z0-9.-]{0,12}\n?\Z"),
    st.from_regex(r"\A[a-zA-Z0-9.-]{0,20}\n?\Z"),
    st.from_regex(r"\A[A-Za-z]{1,3}\n?\Z"),
)
any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    edge_text,
    formatish_text,
)


def verdicts(name: str, record: dict[str, Any]) -> tuple[bool, bool]:
    """Return (fast verdict, full verdict) for one record of one product."""
    fast, full = VALIDATORS[name]
    try:
        fast(record)
        fast_ok = True
    except fastjsonschema.JsonSchemaException:
        fast_ok = False
    return fast_ok, full.is_valid(record)


def _validators() -> dict[str, tuple[Any, Draft7Validator]]:
    """Build both validators for every shipped schema, as Product does."""
    built = {}
    for name in PRODUCTS:
        schema = json.loads((SCHEMAS / f"{name}.json").read_text())
        built[name] = (compile_fast(schema), full_validator(schema))
    return built


VALIDATORS = _validators()


def record_for(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Records over the product's fields (and sometimes an unknown one)."""
    fields = list(REGISTRY.get(name).fields) + ["unknown_column"]
    return st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))


VALID_TEXT = {
    "email": st.from_regex(r"\A[a-z0-9._+-]{1,8}@[a-z0-9]{1,8}(\.[a-z]{2,4}){1,2}\Z"),
    "hostname": st.from_regex(r"\A[a-z0-9]{1,8}(\.[a-z][a-z0-9]{0,7}){0,2}\Z"),
    "date": st.dates().map(lambda day: day.isoformat()),
    "date-time": st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
}


def valid_value(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy one property, so that a single bad field decides the verdict."""
    kind = prop["type"]
    if kind == "integer":
        return st.integers(prop.get("minimum", -5), prop.get("maximum", 10**6))
    if kind == "number":
        return st.floats(prop.get("minimum", -5), 1e6) | st.integers(0, 5)
    if kind == "boolean":
        return st.booleans()
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    if "format" in prop:
        return VALID_TEXT[prop["format"]]
    if "pattern" in prop:  # the shipped schemas' only pattern is the country code
        return st.from_regex(r"\A[A-Z]{2}\Z")
    return st.text(min_size=1, max_size=prop.get("maxLength", 20))


def valid_record(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Records that satisfy the product's schema."""
    product = REGISTRY.get(name)
    per_field = {f: valid_value(p) for f, p in product.schema["properties"].items()}
    required = {field: per_field[field] for field in product.required}
    optional = {f: s for f, s in per_field.items() if f not in required}
    return st.fixed_dictionaries(required, optional=optional)


NEAR_MISSES = [
    lambda text: text + "\n",
    lambda text: " " + text,
    lambda text: text.upper(),
    lambda text: text.lower(),
    lambda text: text[:-1],
    lambda text: text[1:],
    lambda text: text + ".",
    lambda text: "-" + text,
    lambda text: text.replace(".", ".."),
    lambda text: text.replace("-", "/"),
    lambda text: text.replace("T", " "),
    lambda text: text[:-1] + "9" if text else text,
]


@st.composite
def one_field_off(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A valid record with one field removed, replaced by an edge value, or nudged off its format."""
    record = draw(valid_record(name))
    fields = list(REGISTRY.get(name).fields) + ["unknown_column"]
    field = draw(st.sampled_from(fields))
    value = record.get(field)
    if isinstance(value, str) and draw(st.booleans()):
        return _replace(record, field, draw(st.sampled_from(NEAR_MISSES))(value))
    return _replace(record, field, draw(st.none() | edge_text | any_value))


def _replace(record: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """Copy a record with one field set (None: removed)."""
    changed = dict(record)
    if value is None:
        changed.pop(field, None)
    else:
        changed[field] = value
    return changed


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_both_validators_agree_on_arbitrary_records(name: str, data: st.DataObject) -> None:
    record = data.draw(record_for(name, any_value))
    fast_ok, full_ok = verdicts(name, record)
    assert fast_ok == full_ok, record


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_both_validators_agree_on_valid_records_with_one_field_off(name: str, data: st.DataObject) -> None:
    record = data.draw(one_field_off(name))
    fast_ok, full_ok = verdicts(name, record)
    assert fast_ok == full_ok, record


BASES = {
    "users": {
        "external_id": "u1",
        "email": "bob@example.com",
        "first_name": "Bob",
        "last_name": "Smith",
        "role": "admin",
        "age": 30,
        "active": True,
        "created_at": "2024-05-01T09:30:00Z",
    },
    "organizations": {
        "external_id": "o1",
        "name": "Acme",
        "domain": "acme.example",
        "country": "FR",
        "seats": 10,
        "active": False,
    },
    "courses": {
        "external_id": "c1",
        "title": "Maths",
        "organization_id": "o1",
        "start_date": "2024-09-02",
        "credits": 2.5,
        "active": True,
    },
}
GRID_VALUES: list[Any] = [*EDGES, None, True, 0, -1, 151, 1.0, 1.5, float("nan"), float("inf"), [], {}]


@pytest.mark.parametrize("name", PRODUCTS)
def test_both_validators_agree_on_every_edge_value_in_every_field(name: str) -> None:
    base = BASES[name]
    assert verdicts(name, base) == (True, True)
    for field in [*REGISTRY.get(name).fields, "unknown_column"]:
        for value in GRID_VALUES:
            record = {**base, field: value}
            fast_ok, full_ok = verdicts(name, record)
            assert fast_ok == full_ok, record


raw_cell = st.one_of(edge_text, formatish_text, st.from_regex(r"\A ?[+-]?[0-9.e]{1,5} ?\Z"))


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_check_stores_only_what_the_full_validator_accepts_and_explains_every_rejection(
    name: str, data: st.DataObject
) -> None:
    product = REGISTRY.get(name)
    raw = data.draw(record_for(name, raw_cell))
    stored, errors = product.check(1, raw)
    full = VALIDATORS[name][1]
    if stored is not None:
        assert errors == []
        assert full.is_valid(stored), stored
        assert all(value is not None and value != "" for value in stored.values())
    else:
        assert errors
        # The fallback message exists only for a disagreement between the two.
        assert not any(e.message.startswith("record rejected") for e in errors), errors


def test_plain_jsonschema_would_disagree_on_a_pattern_with_a_trailing_newline() -> None:
    # Why full_validator rewrites "$": Python's "$" matches before a final "\n".
    schema = REGISTRY.get("organizations").schema
    record = {"external_id": "o", "name": "n", "country": "FR\n"}
    assert Draft7Validator(schema).is_valid(record)
    assert verdicts("organizations", record) == (False, False)


def test_plain_jsonschema_would_accept_an_impossible_date_time() -> None:
    # Why full_validator carries our format checker: without one, formats are annotations.
    schema = REGISTRY.get("users").schema
    record = {"external_id": "u", "email": "a@b.co", "created_at": "2024-13-45T99:00:00Z"}
    assert Draft7Validator(schema).is_valid(record)
    assert verdicts("users", record) == (False, False)


def test_fastjsonschema_alone_would_disagree_on_email() -> None:
    # Why compile_fast passes our formats: its own email regex differs from ours.
    schema = REGISTRY.get("users").schema
    record = {"external_id": "u", "email": "a@10.0.0.1"}
    fastjsonschema.compile(schema)(record)  # its built-in check accepts it
    assert verdicts("users", record) == (False, False)


# --- the hot path: generated per product, proven against the reference path ----
#
# Product.check first runs a function generated from the schema (Product.fast_data);
# when that answers None, the record takes Product.reference_check (the coercers,
# fastjsonschema, jsonschema). The hot path may defer any record, but whatever it
# returns must be exactly what the reference returns, which jsonschema accepts.


class Cell(str):
    """A str subclass cell: the hot path defers it, the reference handles it."""


def same(one: dict[str, Any] | None, other: dict[str, Any] | None) -> bool:
    """Equal records, key order and value classes included (1, 1.0 and True are == in Python)."""
    if one is None or other is None:
        return one is other
    return (
        list(one.items()) == list(other.items())
        and [v.__class__ for v in one.values()] == [v.__class__ for v in other.values()]
        and json.dumps(one, ensure_ascii=False) == json.dumps(other, ensure_ascii=False)
    )


def assert_hot_path_agrees(product: Product, raw: dict[str, Any]) -> bool:
    """Check every answer of the hot path against the reference; return whether it was taken."""
    reference, reference_errors = product.reference_check(5, raw)
    fast = product.fast_data(raw)
    if fast is not None:
        assert same(fast, reference), (raw, fast, reference)
        assert reference_errors == []
        assert product._full.is_valid(fast), fast
    text = product.fast_json(raw)
    assert (text is None) == (fast is None), raw
    if text is not None:
        assert text == json.dumps(reference, ensure_ascii=False), (raw, text)
    data, errors = product.check(5, raw)
    assert same(data, reference) and errors == reference_errors, (raw, data, reference)
    encoded, errors = product.check_json(5, raw)
    expected = None if reference is None else json.dumps(reference, ensure_ascii=False)
    assert encoded == expected and errors == reference_errors, (raw, encoded, expected)
    return fast is not None


SPELLINGS = ["true", "True", "TRUE", "yes", "Yes", "YES", "1", "false", "False", "FALSE", "no", "No", "NO", "0"]


@st.composite
def as_cell(draw: st.DrawFn, value: Any) -> Any:
    """A raw cell that coerces to value: its text (sometimes padded or signed), or the native value."""
    if draw(st.booleans()):
        return value  # an XLSX cell keeps its native type
    if isinstance(value, bool):
        text = draw(
            st.sampled_from(
                [s for s in SPELLINGS if s.lower() in (("true", "yes", "1") if value else ("false", "no", "0"))]
            )
        )
    elif isinstance(value, int):
        text = draw(st.sampled_from([str(value), f"+{value}" if value >= 0 else str(value)]))
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = value
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\n"]))


@st.composite
def shuffled(draw: st.DrawFn, record: dict[str, Any]) -> dict[str, Any]:
    """The same record with its fields in a drawn order (a key=value file may reorder them)."""
    keys = draw(st.permutations(list(record)))
    return {key: record[key] for key in keys}


@st.composite
def valid_raw(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A raw record (cells) whose coerced values satisfy the schema."""
    record = draw(valid_record(name))
    return draw(shuffled({field: draw(as_cell(value)) for field, value in record.items()}))


raw_any_cell = st.one_of(
    raw_cell,
    any_value,
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.times(),
    st.sampled_from(SPELLINGS),
    raw_cell.map(Cell),
    st.binary(max_size=3),
)


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_hot_path_agrees_with_the_reference_on_arbitrary_raw_records(name: str, data: st.DataObject) -> None:
    product = REGISTRY.get(name)
    raw = data.draw(record_for(name, raw_any_cell).flatmap(shuffled))
    assert_hot_path_agrees(product, raw)


FRESH = ProductRegistry.load(SCHEMAS)


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_hot_path_takes_every_valid_raw_record(name: str, data: st.DataObject) -> None:
    # Completeness where it pays: a valid record must not fall to the slow path (unless the
    # product has met too many field orders already, so this test keeps its own products).
    product = FRESH.get(name)
    if len(product._plans) >= products_module._MAX_PLANS - 1:
        product._plans.clear()
    raw = data.draw(valid_raw(name))
    fast = assert_hot_path_agrees(product, raw)
    plain = all(cell.__class__ in (str, int, float, bool) or cell is None for cell in raw.values())
    # (valid_record may draw an invalid value, such as the all-numeric host name "0")
    assert fast or not plain or product.reference_check(1, raw)[0] is None, raw


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_hot_path_agrees_on_valid_raw_records_with_one_cell_off(name: str, data: st.DataObject) -> None:
    product = REGISTRY.get(name)
    raw = dict(data.draw(valid_raw(name)))
    field = data.draw(st.sampled_from([*product.fields, "unknown_column"]))
    value = raw.get(field)
    if isinstance(value, str) and data.draw(st.booleans()):
        raw[field] = data.draw(st.sampled_from(NEAR_MISSES))(value)
    else:
        raw[field] = data.draw(st.none() | raw_any_cell)
    assert_hot_path_agrees(product, raw)


RAW_GRID: list[Any] = [
    *GRID_VALUES,
    *SPELLINGS,
    " yes ",
    "maybe",
    " 42 ",
    "+42",
    "-0",
    "007",
    "4.5",
    "1e3",
    "1e999",
    "9" * 18,
    "9" * 19,
    "٤٢",
    " 2024-05-01T09:30:00Z ",
    "2024-02-29T23:59:59-05:30",
    " bob@example.com",
    Cell("student"),
    Cell(" 7 "),
    dt.date(2024, 2, 29),
    dt.datetime(2024, 5, 1, 9, 30),
    dt.datetime(2024, 5, 1, 0, 0, tzinfo=dt.UTC),
    dt.time(9, 30),
    12345.0,
    -0.0,
    10**20,
    b"x",
]
RAW_BASES = {
    "users": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in BASES["users"].items()},
    "organizations": {**BASES["organizations"], "seats": "10", "active": "no"},
    "courses": {**BASES["courses"], "credits": "2.5", "active": "yes"},
}


@pytest.mark.parametrize("name", PRODUCTS)
def test_hot_path_agrees_on_every_raw_edge_value_in_every_field(name: str) -> None:
    product = REGISTRY.get(name)
    assert assert_hot_path_agrees(product, RAW_BASES[name])
    for field in [*product.fields, "unknown_column"]:
        for value in RAW_GRID:
            assert_hot_path_agrees(product, {**RAW_BASES[name], field: value})
            without = {k: v for k, v in RAW_BASES[name].items() if k != field}
            assert_hot_path_agrees(product, {field: value, **without})  # another field order


# A schema that uses every keyword the generator compiles, keywords that cannot
# apply to their property's type, and property names that would break careless
# code generation (quotes, braces, backslashes, the generator's own variable names).
ODD = "quo\"te\\ {brace} ünï\n'x"
GENERATED: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$comment": "every compiled keyword",
    "type": "object",
    "properties": {
        "code": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[A-Z]+[0-9]*$"},
        ODD: {"type": "string", "enum": ["a", "b", 1, None]},
        "r0": {"type": "string", "format": "hostname"},
        "v1": {"type": "string", "format": "date", "minimum": 3},
        "_ABSENT": {"type": "string", "format": "date-time"},
        "count": {"type": "integer", "minimum": -3, "exclusiveMaximum": 10, "format": "email", "maxLength": 1},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 2.5},
        "big": {"type": "number", "minimum": 1.5, "exclusiveMaximum": 1e300},
        "flag": {"type": "boolean", "format": "date", "minimum": 1},
        "mail": {"type": "string", "format": "email", "description": "an address"},
    },
    "required": ["code", "flag"],
    "additionalProperties": False,
}
GENERATED_CELLS = st.one_of(
    raw_any_cell,
    st.sampled_from(["AB", "AB12", "ab", "A", "ABCDEF", "AB1\n", "a", "b", "1", "-3", "-4", "9", "10", "0", "0.0"]),
    st.sampled_from(["1.5", "2.5", "2.6", "1e300", "1e299", " 1.5 ", "host.example", "bob@example.com"]),
)


@pytest.mark.parametrize("extra", [False, True, None])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hot_path_agrees_on_a_schema_with_every_compiled_keyword(extra: bool | None, data: st.DataObject) -> None:
    schema = dict(GENERATED)
    if extra is None:
        del schema["additionalProperties"]
    else:
        schema["additionalProperties"] = extra
    product = _generated_product(json.dumps(schema))
    fields = [*product.fields, "unknown"]
    raw = data.draw(st.dictionaries(st.sampled_from(fields), GENERATED_CELLS, max_size=len(fields)))
    assert_hot_path_agrees(product, raw)


GENERATED_VALID: dict[str, st.SearchStrategy[Any]] = {
    "code": st.from_regex(r"\A[A-Z]{1,3}[0-9]{0,2}\Z"),
    ODD: st.sampled_from(["a", "b"]),
    "r0": VALID_TEXT["hostname"],
    "v1": VALID_TEXT["date"],
    "_ABSENT": VALID_TEXT["date-time"],
    "count": st.integers(-4, 10),
    "ratio": st.floats(-0.5, 3.0) | st.integers(0, 3),
    "big": st.floats(1.0, 1e300) | st.integers(1, 10**20),
    "flag": st.booleans(),
    "mail": VALID_TEXT["email"],
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hot_path_agrees_on_near_valid_records_of_the_schema_with_every_compiled_keyword(data: st.DataObject) -> None:
    product = _generated_product(json.dumps(GENERATED))
    required = {field: GENERATED_VALID[field] for field in ("code", "flag")}
    optional = {f: s for f, s in GENERATED_VALID.items() if f not in required}
    record = data.draw(st.fixed_dictionaries(required, optional=optional))
    raw = data.draw(shuffled({field: data.draw(as_cell(value)) for field, value in record.items()}))
    if data.draw(st.booleans()):
        field = data.draw(st.sampled_from([*product.fields, "unknown"]))
        raw[field] = data.draw(st.none() | GENERATED_CELLS)
    assert_hot_path_agrees(product, raw)


def test_the_generated_schema_has_a_hot_path_for_valid_records() -> None:
    product = _generated_product(json.dumps(GENERATED))
    raw = {
        "code": " AB1 ",
        ODD: "a",
        "r0": "host.example",
        "v1": "2024-02-29",
        "_ABSENT": "2024-02-29T23:59:59Z",
        "count": "9",
        "ratio": "2.5",
        "big": 3,
        "flag": "YES",
        "mail": "bob@example.com",
    }
    assert assert_hot_path_agrees(product, raw)
    assert assert_hot_path_agrees(product, {"flag": False, "code": "AB", ODD: " "})
    assert not assert_hot_path_agrees(product, {**raw, "count": "10"})
    assert not assert_hot_path_agrees(product, {**raw, "ratio": "0"})


_GENERATED_CACHE: dict[str, Product] = {}


def _generated_product(schema_text: str) -> Product:
    """One Product per schema text, built once (hypothesis calls the test many times)."""
    if schema_text not in _GENERATED_CACHE:
        _GENERATED_CACHE[schema_text] = Product("things", json.loads(schema_text))
    return _GENERATED_CACHE[schema_text]


@pytest.mark.parametrize(
    "extra",
    [
        {"const": "x"},
        {"allOf": [{"minLength": 3}]},
        {"not": {"enum": ["x"]}},
        {"$ref": "#/definitions/x"},
        {"if": {"minLength": 3}, "then": {"maxLength": 1}},
        {"contentMediaType": "text/plain"},
    ],
)
def test_a_keyword_the_generator_does_not_know_turns_the_hot_path_off(extra: dict[str, Any]) -> None:
    schema = {
        "type": "object",
        "definitions": {"x": {"maxLength": 1}},
        "properties": {"code": {"type": "string", **extra}, "n": {"type": "integer"}},
    }
    product = Product("things", schema)
    assert product.fast_data({"code": "xyz", "n": "1"}) is None
    for code in ["x", "xyz", "y", ""]:
        assert_hot_path_agrees(product, {"code": code, "n": "1"})


@pytest.mark.parametrize(
    "schema_change",
    [
        {"additionalProperties": {"type": "string"}},
        {"patternProperties": {"^x": {"type": "string"}}},
        {"minProperties": 2},
        {"dependencies": {"n": ["code"]}},
    ],
)
def test_a_top_level_keyword_the_generator_does_not_know_turns_the_hot_path_off(schema_change: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string"}, "n": {"type": "integer"}}, **schema_change}
    product = Product("things", schema)
    assert product.fast_data({"code": "x", "n": "1"}) is None
    for raw in ({"code": "x", "n": "1"}, {"n": "2"}, {"code": "x"}):
        assert_hot_path_agrees(product, raw)


@pytest.mark.parametrize(
    "prop",
    [
        {"type": "integer", "enum": [1, 2]},
        {"type": "number", "multipleOf": 0.5},
        {"type": "boolean", "const": True},
    ],
)
def test_a_non_string_keyword_the_generator_does_not_know_turns_the_hot_path_off(prop: dict[str, Any]) -> None:
    product = Product("things", {"type": "object", "properties": {"x": prop}})
    assert product.fast_data({"x": "1"}) is None
    for cell in ["1", "2", "1.5", "true", "0"]:
        assert_hot_path_agrees(product, {"x": cell})


def test_records_without_a_required_field_or_with_an_unknown_one_take_the_slow_path() -> None:
    users = REGISTRY.get("users")
    assert users.fast_data({"external_id": "u"}) is None
    assert users.fast_data({"external_id": "u", "email": "a@b.co", "shoe": "42"}) is None
    assert_hot_path_agrees(users, {"external_id": "u"})
    assert_hot_path_agrees(users, {"external_id": "u", "email": "a@b.co", "shoe": "42"})


def test_endlessly_varying_field_orders_stop_growing_the_plans_but_stay_correct() -> None:
    product = Product("users", REGISTRY.get("users").schema)
    optional = [f for f in product.fields if f not in product.required]
    limit = products_module._MAX_PLANS
    for keys in itertools.islice(itertools.permutations(optional), limit + 20):
        raw = {"external_id": "u", "email": "a@b.co", **{k: RAW_BASES["users"][k] for k in keys}}
        assert_hot_path_agrees(product, raw)
    assert len(product._plans) == limit
    assert product.fast_data(raw) is None  # past the limit, a new order takes the slow path


# --- explaining a rejected record: the cheap way says what jsonschema on the whole record says


@pytest.mark.parametrize("name", PRODUCTS)
@SETTINGS
@given(data=st.data())
def test_the_cheap_explanation_of_a_rejected_record_is_the_full_one(name: str, data: st.DataObject) -> None:
    product = REGISTRY.get(name)
    raw = data.draw(record_for(name, raw_cell))
    coerced, failed = product.coerce(raw)
    if failed is None and product._full.is_valid(coerced):
        return
    cheap = product._explain(3, coerced, failed or {}, "verdict")
    assert cheap == product.explain_fully(3, coerced, failed or {}, "verdict"), raw


@pytest.mark.parametrize("name", PRODUCTS)
def test_the_cheap_explanation_agrees_on_every_grid_value_of_every_field(name: str) -> None:
    product = REGISTRY.get(name)
    base = {field: "x" for field in product.required}
    for field in [*product.fields, "unknown_column"]:
        for value in GRID_VALUES:
            coerced, failed = product.coerce({**base, field: value})
            if failed is None and product._full.is_valid(coerced):
                continue
            assert product._explain(1, coerced, failed or {}, "v") == product.explain_fully(
                1, coerced, failed or {}, "v"
            )


# Keyword order decides which message a field gets when a value fails two keywords, and
# exclusive limits are not worded by _sentence: the cheap path must follow jsonschema in both.
ORDERED = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^[a-z]+$", "minLength": 3, "maxLength": 5},
        "name": {"type": "string", "maxLength": 4, "minLength": 2, "pattern": "^[A-Z]", "enum": ["Ab", "ABCDE"]},
        "n": {"type": "integer", "maximum": 10, "exclusiveMinimum": 0},
        "x": {"type": "number", "exclusiveMaximum": 1.5, "minimum": -2},
        "day": {"type": "string", "format": "date", "maxLength": 8},
    },
    "required": ["code"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("order", [1, -1])
def test_the_cheap_explanation_follows_the_keyword_order_and_exclusive_limits(order: int) -> None:
    properties = {
        field: dict(list(prop.items())[:1] + list(prop.items())[1:][::order])
        for field, prop in ORDERED["properties"].items()
    }
    product = Product("ordered", {**ORDERED, "properties": properties})
    values = [*GRID_VALUES, "A", "AB", "ab", "abcdef", "ABCDEF", "a1", "2024-01-01", "20240101x", 0, 10, 11, 1.5, -3]
    explained = 0
    for field in properties:
        for value in values:
            raw = {"code": "abc", field: value}
            coerced, failed = product.coerce(raw)
            if failed is None and product._full.is_valid(coerced):
                continue
            explained += 1
            cheap = product._explain(1, coerced, failed or {}, "v")
            assert cheap == product.explain_fully(1, coerced, failed or {}, "v"), raw
    assert explained > 40
