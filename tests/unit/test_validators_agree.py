"""The fast validator (verdict) and the full one (messages) must agree on every record.

A row the fast one rejects but the full one accepts would be logged with no
reason; the other way round, a bad row would be stored. Both are given the
same format functions, and these tests throw generated records at both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from service.products import ProductRegistry, compile_fast, full_validator

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
