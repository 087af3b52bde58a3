"""Column aliases: other header names a schema property answers to (SPEC 6, "Aliases")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import ConfigError, FileRejected
from service.schema.headers import ColumnMap
from service.schema.products import Product, ProductRegistry

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
REGISTRY = ProductRegistry.load(SCHEMAS)
# The aliases SPEC 6 asks for, at least: (product, alias, field).
SPEC_ALIASES = [
    ("users", "id", "external_id"),
    ("users", "user_id", "external_id"),
    ("users", "e-mail", "email"),
    ("users", "mail", "email"),
    ("users", "email address", "email"),
    ("organizations", "id", "external_id"),
    ("organizations", "org_id", "external_id"),
    ("courses", "id", "external_id"),
    ("courses", "course_id", "external_id"),
]


def shipped_aliases() -> list[tuple[str, str, str]]:
    """Every (product, alias, field) the schema files declare."""
    found = []
    for path in sorted(SCHEMAS.glob("*.json")):
        for field, prop in json.loads(path.read_text())["properties"].items():
            found += [(path.stem, alias, field) for alias in prop.get("x-aliases", [])]
    return found


def required_header(product: Product, alias: str, field: str) -> list[str]:
    """A header with the alias for its field and the canonical name of every other required field."""
    return [alias if name == field else name for name in dict.fromkeys([*product.required, field])]


def write_schema(tmp_path: Path, properties: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": properties, "required": list(properties)[:1]}
    (tmp_path / "things.json").write_text(json.dumps(schema))


# --- the shipped aliases ------------------------------------------------------


def test_the_schemas_ship_at_least_the_aliases_of_the_spec() -> None:
    assert set(SPEC_ALIASES) <= set(shipped_aliases())


@pytest.mark.parametrize(("product_name", "alias", "field"), shipped_aliases())
def test_every_shipped_alias_maps_a_header_column_to_its_field(product_name: str, alias: str, field: str) -> None:
    product = REGISTRY.get(product_name)
    header = required_header(product, alias, field)
    columns = product.map_header(header)
    assert columns.fields[header.index(alias)] == field
    assert columns.aliases == ((alias, field),)
    assert columns.unknown == ()


@pytest.mark.parametrize(("product_name", "alias", "field"), shipped_aliases())
def test_every_shipped_alias_maps_a_key_value_key_to_its_field(product_name: str, alias: str, field: str) -> None:
    product = REGISTRY.get(product_name)
    assert product.map_keys([alias, "nick"]) == ({alias: field}, ["nick"])
    assert product.aliases_used([alias, "nick"]) == [(alias, field)]


@pytest.mark.parametrize("written", ["Email Address", " email address ", "EMAIL  ADDRESS", "email\taddress", "E-MAIL"])
def test_aliases_match_whatever_the_case_and_the_white_space(written: str) -> None:
    users = REGISTRY.get("users")
    columns = users.map_header(["ID", written])
    assert columns.fields == ("external_id", "email")
    assert columns.aliases == (("ID", "external_id"), (written.strip(), "email"))
    assert users.map_keys([written])[0] == {written: "email"}


def test_a_column_under_its_canonical_name_is_not_reported_as_an_alias() -> None:
    users = REGISTRY.get("users")
    assert users.map_header([" External_ID ", "mail"]).aliases == (("mail", "email"),)
    assert users.map_header(["external_id", "email"]) == ColumnMap(("external_id", "email"), (), (), ())
    assert users.aliases_used(["external_id", "Email", "role"]) == []


def test_aliases_used_for_key_value_keys_are_sorted_by_key_whatever_the_order_given() -> None:
    users = REGISTRY.get("users")
    keys = ["user_id", "first_name", "e-mail"]
    assert users.aliases_used(keys) == [("e-mail", "email"), ("user_id", "external_id")]
    assert users.aliases_used(frozenset(keys)) == users.aliases_used(reversed(keys))


def test_an_alias_satisfies_a_required_column() -> None:
    organizations = REGISTRY.get("organizations")
    assert organizations.map_header(["org_id", "name"]).fields == ("external_id", "name")
    with pytest.raises(FileRejected, match=r"missing required column\(s\): name"):
        organizations.map_header(["org_id", "title"])


def test_an_alias_of_another_product_is_an_unknown_column() -> None:
    courses = REGISTRY.get("courses")
    columns = courses.map_header(["course_id", "title", "org_id", "mail"])
    assert columns.fields == ("external_id", "title", None, None)
    assert columns.unknown == ("org_id", "mail")


# --- two columns for one field -------------------------------------------------


def test_a_column_and_an_alias_of_the_same_field_fail_the_file_naming_both() -> None:
    with pytest.raises(FileRejected) as caught:
        REGISTRY.get("users").map_header(["external_id", "email", "role", "age", " E-Mail "])
    assert str(caught.value) == "line 1: columns 'email' (2) and 'E-Mail' (5) both map to field email"
    assert caught.value.line == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["id", "email", "external_id"], "columns 'id' (1) and 'external_id' (3) both map to field external_id"),
        (
            ["external_id", "Mail", "Email Address"],
            "columns 'Mail' (2) and 'Email Address' (3) both map to field email",
        ),
        (["user_id", "email", "ID"], "columns 'user_id' (1) and 'ID' (3) both map to field external_id"),
    ],
)
def test_two_columns_that_map_to_one_field_fail_the_file(header: list[str], message: str) -> None:
    with pytest.raises(FileRejected) as caught:
        REGISTRY.get("users").map_header(header)
    assert str(caught.value) == f"line 1: {message}"


def test_the_same_alias_twice_is_a_duplicate_column_as_before() -> None:
    with pytest.raises(FileRejected) as caught:
        REGISTRY.get("users").map_header(["external_id", "email address", "Email  Address"])
    assert str(caught.value) == "line 1: duplicate column 'Email  Address' (columns 2 and 3)"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["email", "E-Mail"], "keys 'E-Mail' and 'email' both map to field email"),
        (["mail", "e-mail"], "keys 'e-mail' and 'mail' both map to field email"),
        (["id", "external_id"], "keys 'external_id' and 'id' both map to field external_id"),
        (["Email", "email"], "keys 'Email' and 'email' both map to field email"),
    ],
)
def test_two_key_value_keys_that_map_to_one_field_fail_the_file_naming_both(keys: list[str], message: str) -> None:
    users = REGISTRY.get("users")
    for order in (keys, keys[::-1], frozenset(keys)):
        with pytest.raises(FileRejected) as caught:
            users.map_keys(order)
        assert str(caught.value) == message
        assert caught.value.line is None
        with pytest.raises(FileRejected, match=message):
            users.aliases_used(order)


# --- bad x-aliases in a schema ---------------------------------------------------


@pytest.mark.parametrize(
    ("aliases", "complaint"),
    [
        ("mail", "property email: x-aliases must be a list of non-empty strings, not 'mail'"),
        ({"mail": 1}, "property email: x-aliases must be a list of non-empty strings, not {'mail': 1}"),
        (["mail", 42], "property email: alias 42 in x-aliases is not a non-empty string"),
        (["mail", ""], "property email: alias '' in x-aliases is not a non-empty string"),
        (["  "], "property email: alias '  ' in x-aliases is not a non-empty string"),
        ([None], "property email: alias None in x-aliases is not a non-empty string"),
    ],
)
def test_an_x_aliases_that_is_not_a_list_of_non_empty_strings_fails_loading(
    tmp_path: Path, aliases: Any, complaint: str
) -> None:
    write_schema(tmp_path, {"code": {"type": "string"}, "email": {"type": "string", "x-aliases": aliases}})
    with pytest.raises(ConfigError) as caught:
        ProductRegistry.load(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'things.json'}: product things: {complaint}"


@pytest.mark.parametrize(
    ("properties", "complaint"),
    [
        (
            {"code": {"type": "string"}, "email": {"type": "string", "x-aliases": ["mail", " CODE "]}},
            "property email: alias ' CODE ' is ambiguous: it is also the name of property code",
        ),
        (
            {"code": {"type": "string", "x-aliases": ["Email"]}, "email": {"type": "string"}},
            "property code: alias 'Email' is ambiguous: it is also the name of property email",
        ),
        (
            {
                "code": {"type": "string", "x-aliases": ["ref number"]},
                "serial": {"type": "string", "x-aliases": ["Ref  Number"]},
            },
            "property serial: alias 'Ref  Number' is ambiguous: it is also an alias of property code",
        ),
    ],
)
def test_an_alias_that_matches_another_property_fails_loading(
    tmp_path: Path, properties: dict[str, Any], complaint: str
) -> None:
    write_schema(tmp_path, properties)
    with pytest.raises(ConfigError) as caught:
        ProductRegistry.load(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'things.json'}: product things: {complaint}"


def test_an_alias_repeating_its_own_property_is_harmless(tmp_path: Path) -> None:
    write_schema(tmp_path, {"code": {"type": "string", "x-aliases": ["Code", "ref", "REF"]}})
    things = ProductRegistry.load(tmp_path).get("things")
    assert things.map_header(["code"]).aliases == ()
    assert things.map_header([" Ref "]) == ColumnMap(("code",), (), (), (("Ref", "code"),))


def test_x_aliases_leave_the_schema_on_the_hot_path() -> None:
    row = {"external_id": "u1", "email": "a@b.co", "age": "42"}
    assert REGISTRY.get("users").fast_data(row) == {"external_id": "u1", "email": "a@b.co", "age": 42}


# --- aliases never change validation ----------------------------------------------

CANONICAL = ["external_id", "email", "first_name", "age", "active"]
THROUGH_ALIASES = ["User_ID", "Email  Address", "first_name", "AGE", "active"]
RECORDS = [
    ["u1", "bob@example.com", "Bob", "+42", "yes"],  # valid
    [" u2 ", " ann@example.org ", "", "", ""],  # valid, with absent fields
    ["u3", "bob", "Bob", "4.5", "maybe"],  # invalid: email, age, active
    ["", "", "x" * 101, "-1", "1"],  # invalid: required fields empty, name too long, age too low
]


def raw_from_header(product: Product, header: list[str], cells: list[str]) -> dict[str, Any]:
    """Build the record the pipeline builds from a header file's row."""
    columns = product.map_header(header).fields
    return {field: cells[i] for i, field in enumerate(columns) if field is not None}


def raw_from_keys(product: Product, keys: list[str], cells: list[str]) -> dict[str, Any]:
    """Build the record the pipeline builds from a key=value record."""
    record = dict(zip(keys, cells, strict=True))
    return {field: record[key] for key, field in product.map_keys(record)[0].items()}


@pytest.mark.parametrize("cells", RECORDS)
def test_a_record_read_through_aliases_is_judged_like_one_read_through_the_names(cells: list[str]) -> None:
    users = REGISTRY.get("users")
    canonical = raw_from_header(users, CANONICAL, cells)
    for raw in (raw_from_header(users, THROUGH_ALIASES, cells), raw_from_keys(users, THROUGH_ALIASES, cells)):
        assert raw == canonical
        assert users.check(3, raw) == users.check(3, canonical)
        assert users.check_json(3, raw) == users.check_json(3, canonical)


def test_the_records_of_the_validation_test_cover_both_verdicts() -> None:
    users = REGISTRY.get("users")
    verdicts = [users.check(1, raw_from_header(users, THROUGH_ALIASES, cells))[0] is not None for cells in RECORDS]
    assert verdicts == [True, True, False, False]


@pytest.mark.parametrize(("product_name", "alias", "field"), shipped_aliases())
def test_every_shipped_alias_carries_its_cell_to_the_same_data(product_name: str, alias: str, field: str) -> None:
    product = REGISTRY.get(product_name)
    names = list(dict.fromkeys([*product.required, field]))
    cells = [f" v-{name} " if name != "email" else " a@b.co " for name in names]
    canonical = dict(zip(names, cells, strict=True))
    raw = raw_from_header(product, required_header(product, alias, field), cells)
    assert raw == canonical
    assert product.check_json(1, raw) == product.check_json(1, canonical)
    assert product.check(1, raw)[1] == []
