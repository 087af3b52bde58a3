"""Product registry, header mapping and the per-row check (SPEC 6)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import ConfigError, FileRejected, RowError, UnknownProduct
from service.schema.headers import ColumnMap
from service.schema.products import PRODUCT_NAME, Product, ProductRegistry
from service.schema.validators import (
    date_text,
    date_time_text,
    email_text,
    hostname_text,
    is_date,
    is_date_time,
    is_email,
    is_hostname,
)
from tests.conftest import ROOT

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture(scope="module")
def registry() -> ProductRegistry:
    return ProductRegistry.load(SCHEMAS)


@pytest.fixture(scope="module")
def users(registry: ProductRegistry) -> Product:
    return registry.get("users")


@pytest.fixture(scope="module")
def organizations(registry: ProductRegistry) -> Product:
    return registry.get("organizations")


@pytest.fixture(scope="module")
def courses(registry: ProductRegistry) -> Product:
    return registry.get("courses")


def errors_of(product: Product, raw: dict[str, Any]) -> dict[str | None, str]:
    """Check a record that must be invalid; return its messages by field."""
    data, errors = product.check(7, raw)
    assert data is None
    assert errors, "an invalid record must be explained"
    assert all(isinstance(e, RowError) and e.source_row == 7 for e in errors)
    return {e.field: e.message for e in errors}


# --- registry ----------------------------------------------------------------


def test_the_registry_loads_the_three_products_of_the_spec(registry: ProductRegistry) -> None:
    assert registry.names() == ["courses", "organizations", "users"]


def test_each_product_lists_its_fields_in_schema_order(registry: ProductRegistry) -> None:
    users = registry.get("users")
    assert users.fields == (
        "external_id",
        "email",
        "first_name",
        "last_name",
        "role",
        "age",
        "active",
        "created_at",
    )
    assert users.required == ("external_id", "email")
    assert registry.get("organizations").required == ("external_id", "name")
    assert registry.get("courses").required == ("external_id", "title")


def test_every_shipped_schema_has_a_title_and_refuses_unknown_properties() -> None:
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["title"] == path.stem
        assert schema["additionalProperties"] is False


def test_an_unknown_product_is_refused_naming_it_and_the_known_ones(
    registry: ProductRegistry,
) -> None:
    with pytest.raises(UnknownProduct) as caught:
        registry.get("pupils")
    message = str(caught.value)
    assert "'pupils'" in message
    assert "courses, organizations, users" in message
    assert caught.value.field == "product_type"


@pytest.mark.parametrize("name", ["Users", "1x", "a-b", "../x", "", "_x", "x.y", "users\n"])
def test_product_name_rejects_anything_but_lower_case_identifiers(name: str) -> None:
    assert PRODUCT_NAME.match(name) is None


@pytest.mark.parametrize("name", ["users", "a", "x1", "course_runs"])
def test_product_name_accepts_lower_case_identifiers(name: str) -> None:
    assert PRODUCT_NAME.match(name) is not None


def test_files_whose_name_is_not_a_product_name_are_ignored(tmp_path: Path) -> None:
    shutil.copy(SCHEMAS / "users.json", tmp_path / "users.json")
    for name in ["Users.json", "a-b.json", "1x.json", "notes.txt"]:
        (tmp_path / name).write_text("not even json")
    assert ProductRegistry.load(tmp_path).names() == ["users"]


def test_a_new_schema_file_is_a_new_product(tmp_path: Path) -> None:
    schema = {
        "title": "rooms",
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 1}},
        "required": ["code"],
        "additionalProperties": False,
    }
    (tmp_path / "rooms.json").write_text(json.dumps(schema))
    rooms = ProductRegistry.load(tmp_path).get("rooms")
    assert rooms.check(1, {"code": " R1 "}) == ({"code": "R1"}, [])


def test_malformed_json_fails_loading_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "users.json").write_text("{")
    with pytest.raises(ConfigError, match="users.json"):
        ProductRegistry.load(tmp_path)


@pytest.mark.parametrize(
    ("prop", "complaint"),
    [
        ({"type": "string", "format": "uri"}, "not checked"),
        ({"type": "array"}, "needs a type"),
        ({"type": ["string", "null"]}, "needs a type"),
    ],
)
def test_a_schema_we_cannot_coerce_or_check_fails_loading(tmp_path: Path, prop: dict[str, Any], complaint: str) -> None:
    schema = {"type": "object", "properties": {"x": prop}}
    (tmp_path / "things.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match=complaint):
        ProductRegistry.load(tmp_path)


@pytest.mark.parametrize(
    "key",
    ["nope", "age", "name"],  # not a property; not a string; not required
)
def test_an_x_key_that_is_not_a_required_string_property_fails_loading(tmp_path: Path, key: str) -> None:
    schema = {
        "type": "object",
        "x-key": key,
        "properties": {"id": {"type": "string"}, "age": {"type": "integer"}, "name": {"type": "string"}},
        "required": ["id", "age"],
    }
    (tmp_path / "things.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match="things.json: product things: x-key"):
        ProductRegistry.load(tmp_path)


@pytest.mark.parametrize("other", ["Code", "code ", "CODE"])
def test_properties_that_differ_only_in_case_or_white_space_fail_loading(tmp_path: Path, other: str) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string"}, other: {"type": "string"}}}
    (tmp_path / "things.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match="things.json: product things: two properties differ only in case"):
        ProductRegistry.load(tmp_path)


def test_runs_of_inner_white_space_in_a_header_name_count_as_one_space(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"first name": {"type": "string"}}}
    (tmp_path / "things.json").write_text(json.dumps(schema))
    things = ProductRegistry.load(tmp_path).get("things")
    assert things.map_header(["First\t  Name"]).fields == ("first name",)
    assert things.map_keys(["FIRST  NAME"]) == ({"FIRST  NAME": "first name"}, [])


def test_every_shipped_product_is_keyed_by_external_id() -> None:
    registry = ProductRegistry.load(ROOT / "schemas")
    assert {name: registry.get(name).key for name in registry.names()} == {
        "courses": "external_id",
        "organizations": "external_id",
        "users": "external_id",
    }


def test_a_schema_of_another_draft_fails_loading(tmp_path: Path) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {}}
    (tmp_path / "things.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match="things.json: product things: .*draft 7"):
        ProductRegistry.load(tmp_path)


def test_a_missing_schemas_directory_fails_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ProductRegistry.load(tmp_path / "nowhere")


# --- header mapping ----------------------------------------------------------


def test_header_names_match_case_insensitively_after_trimming(users: Product) -> None:
    columns = users.map_header([" External_ID ", "EMAIL", "\tRole"])
    assert columns == ColumnMap(fields=("external_id", "email", "role"), unknown=(), blank=())


def test_unknown_and_blank_header_names_are_returned_not_raised(users: Product) -> None:
    columns = users.map_header(["external_id", "", "Nickname", "email", "  ", "shoe size "])
    assert columns.fields == ("external_id", None, None, "email", None, None)
    assert columns.unknown == ("Nickname", "shoe size")
    assert columns.blank == (2, 5)


def test_spreadsheet_header_cells_that_are_empty_or_numbers_do_not_crash(users: Product) -> None:
    columns = users.map_header(["external_id", None, "email", 2024])  # type: ignore[list-item]
    assert columns.blank == (2,)
    assert columns.unknown == ("2024",)


def test_a_duplicate_header_fails_the_file_naming_both_columns(users: Product) -> None:
    with pytest.raises(FileRejected) as caught:
        users.map_header(["external_id", "email", "role", "age", " Email "])
    assert str(caught.value) == "line 1: duplicate column 'Email' (columns 2 and 5)"
    assert caught.value.line == 1


def test_duplicate_unknown_header_names_also_fail_the_file(users: Product) -> None:
    with pytest.raises(FileRejected, match=r"duplicate column 'X' \(columns 3 and 4\)"):
        users.map_header(["external_id", "email", "x", "X"])


def test_several_blank_header_names_are_not_duplicates(users: Product) -> None:
    assert users.map_header(["", "external_id", "", "email"]).blank == (1, 3)


def test_a_missing_required_column_fails_the_file_naming_it(users: Product) -> None:
    with pytest.raises(FileRejected) as caught:
        users.map_header(["external_id", "first_name"])
    assert str(caught.value) == "line 1: missing required column(s): email"


def test_all_missing_required_columns_are_named_in_schema_order(users: Product) -> None:
    with pytest.raises(FileRejected, match=r"missing required column\(s\): external_id, email"):
        users.map_header(["role"])


def test_key_value_keys_map_like_header_names_and_unknown_keys_are_returned(
    users: Product,
) -> None:
    mapping, unknown = users.map_keys(["Email", "external_id", "nick"])
    assert mapping == {"Email": "email", "external_id": "external_id"}
    assert unknown == ["nick"]


# --- check: valid records ---------------------------------------------------


def test_a_valid_row_is_coerced_and_absent_fields_are_left_out(users: Product) -> None:
    raw = {
        "external_id": " u1 ",
        "email": "bob@example.com",
        "first_name": "",
        "last_name": None,
        "role": "teacher",
        "age": "+42",
        "active": "Yes",
        "created_at": "2024-05-01T09:30:00Z",
    }
    data, errors = users.check(1, raw)
    assert errors == []
    assert data == {
        "external_id": "u1",
        "email": "bob@example.com",
        "role": "teacher",
        "age": 42,
        "active": True,
        "created_at": "2024-05-01T09:30:00Z",
    }


def test_a_valid_xlsx_row_with_native_values_is_coerced(users: Product, courses: Product) -> None:
    raw = {"external_id": 12345.0, "email": "a@b.co", "age": 30.0, "active": True}
    assert users.check(1, raw) == (
        {"external_id": "12345", "email": "a@b.co", "age": 30, "active": True},
        [],
    )
    raw = {"external_id": 7, "title": "Maths", "start_date": dt.datetime(2024, 9, 2), "credits": 2}
    assert courses.check(1, raw)[0] == {
        "external_id": "7",
        "title": "Maths",
        "start_date": "2024-09-02",
        "credits": 2,
    }


def test_a_valid_organization_and_course_pass(organizations: Product, courses: Product) -> None:
    organization = {
        "external_id": "o1",
        "name": "Acme",
        "domain": "acme.example",
        "country": "FR",
        "seats": "0",
    }
    assert organizations.check(1, organization)[1] == []
    course = {"external_id": "c1", "title": "T", "start_date": "2024-02-29", "credits": "1.5"}
    assert courses.check(1, course) == ({**course, "credits": 1.5}, [])


# --- check: each format is really asserted ----------------------------------


def test_an_impossible_date_time_is_rejected(users: Product) -> None:
    errors = errors_of(users, {"external_id": "u", "email": "a@b.co", "created_at": "2024-13-45T99:00:00Z"})
    assert errors == {
        "created_at": "created_at: '2024-13-45T99:00:00Z' is not a valid date-time"
        " (RFC 3339, e.g. 2024-05-01T09:30:00Z)"
    }


def test_a_day_that_does_not_exist_is_rejected(courses: Product) -> None:
    errors = errors_of(courses, {"external_id": "c", "title": "t", "start_date": "2024-02-30"})
    assert errors == {"start_date": "start_date: '2024-02-30' is not a valid date (YYYY-MM-DD)"}


@pytest.mark.parametrize("domain", ["exa mple.com", "-bad-.com"])
def test_an_invalid_hostname_is_rejected(organizations: Product, domain: str) -> None:
    errors = errors_of(organizations, {"external_id": "o", "name": "n", "domain": domain})
    assert errors == {"domain": f"domain: {domain!r} is not a valid hostname"}


def test_an_invalid_email_is_rejected(users: Product) -> None:
    errors = errors_of(users, {"external_id": "u", "email": "bob"})
    assert errors == {"email": "email: 'bob' is not a valid email address"}


@pytest.mark.parametrize(
    "value",
    ["bob@example.com", "o'hara+tag@mail.example.co.uk", "É@exämple.com".replace("ä", "a")],
)
def test_email_accepts_ordinary_addresses(value: str) -> None:
    assert is_email(value)


@pytest.mark.parametrize(
    "value",
    [
        "bob",
        "a@b",
        "@example.com",
        "bob@",
        "a@b@example.com",
        "bo b@example.com",
        "bob@exa mple.com",
        "bob@-x.com",
        "bob@example..com",
        "bob@10.0.0.1",
        "bob@example.com.",
        "x" * 65 + "@example.com",
        "bob@" + "a" * 250 + ".com",
    ],
)
def test_email_rejects_what_cannot_be_delivered(value: str) -> None:
    assert not is_email(value)


@pytest.mark.parametrize("value", ["localhost", "example.com", "a-b.c0", "xn--bcher-kva.de"])
def test_hostname_accepts_rfc_1123_names_including_a_single_label(value: str) -> None:
    assert is_hostname(value)


@pytest.mark.parametrize(
    "value",
    ["", "exa mple.com", "-bad-.com", "bad-.com", "a..b", "example.com.", "1.2.3.4", "bücher.de"]
    + ["a" * 64 + ".com", ".".join(["abc"] * 64)],
)
def test_hostname_rejects_malformed_or_numeric_or_non_ascii_names(value: str) -> None:
    assert not is_hostname(value)


@pytest.mark.parametrize("value", ["2024-02-29", "1999-12-31", "0001-01-01"])
def test_date_accepts_real_calendar_days(value: str) -> None:
    assert is_date(value)


@pytest.mark.parametrize(
    "value",
    ["2024-02-30", "2023-02-29", "2024-04-31", "2024-1-05", "2024-00-10", "0000-01-01"]
    + ["20240105", "2024-01-05T00:00:00Z", "2024-01-05 ", "２０２４-01-05"],
)
def test_date_rejects_anything_but_a_real_yyyy_mm_dd(value: str) -> None:
    assert not is_date(value)


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T09:30:00Z", "2024-05-01t09:30:00.123456z", "2024-02-29T23:59:59-05:30"],
)
def test_date_time_accepts_rfc_3339(value: str) -> None:
    assert is_date_time(value)


@pytest.mark.parametrize(
    "value",
    [
        "2024-13-45T99:00:00Z",
        "2024-05-01T09:30:00",
        "2024-05-01 09:30:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T09:60:00Z",
        "2024-12-31T23:59:60Z",
        "2024-05-01T09:30:00+24:00",
        "2024-05-01T09:30Z",
        "2023-02-29T00:00:00Z",
        "2024-05-01",
    ],
)
def test_date_time_rejects_what_is_not_rfc_3339(value: str) -> None:
    assert not is_date_time(value)


def test_format_functions_leave_non_strings_to_the_type_keyword() -> None:
    for check in (is_email, is_hostname, is_date, is_date_time):
        assert check(42) is True


# --- check: errors name the field --------------------------------------------


def test_every_problem_of_a_row_is_reported_in_field_order(users: Product) -> None:
    raw = {
        "external_id": "u1",
        "email": "bob",
        "role": "boss",
        "age": "4.5",
        "active": "maybe",
        "first_name": "x" * 101,
    }
    data, errors = users.check(3, raw)
    assert data is None
    assert [(e.source_row, e.field, e.message) for e in errors] == [
        (3, "email", "email: 'bob' is not a valid email address"),
        (3, "first_name", "first_name: 101 characters, at most 100 allowed"),
        (3, "role", "role: 'boss' is not one of student, teacher, admin"),
        (3, "age", "age: '4.5' is not an integer"),
        (3, "active", "active: 'maybe' is not a boolean (use true/false, yes/no or 1/0)"),
    ]


def test_an_empty_required_field_is_reported_as_required(users: Product) -> None:
    assert errors_of(users, {"external_id": "  ", "email": "a@b.co"}) == {"external_id": "external_id is required"}


def test_a_required_field_that_fails_coercion_is_reported_once(users: Product) -> None:
    errors = errors_of(users, {"external_id": True, "email": "a@b.co"})
    assert errors == {"external_id": "external_id: expected text, got a boolean (true)"}


def test_range_and_pattern_errors_say_what_is_expected(organizations: Product) -> None:
    errors = errors_of(organizations, {"external_id": "o", "name": "n", "country": "fra", "seats": "-1"})
    assert errors == {
        "country": "country: 'fra' is not valid; expected two upper-case letters (ISO 3166-1 alpha-2, e.g. FR)",
        "seats": "seats: -1 is less than the minimum of 0",
    }


def test_an_age_above_the_maximum_is_rejected(users: Product) -> None:
    errors = errors_of(users, {"external_id": "u", "email": "a@b.co", "age": "151"})
    assert errors == {"age": "age: 151 is more than the maximum of 150"}


def test_a_key_that_is_not_a_property_is_reported_not_stored(users: Product) -> None:
    errors = errors_of(users, {"external_id": "u", "email": "a@b.co", "shoe": "42"})
    assert errors == {"shoe": "shoe is not a field of users"}


def test_a_huge_bad_value_is_cut_in_the_message(users: Product) -> None:
    message = errors_of(users, {"external_id": "u", "email": "x" * 100_000})["email"]
    assert len(message) < 120


def test_check_never_raises_on_strange_values(users: Product) -> None:
    raw = {"external_id": object(), "email": b"\x00", "age": [1], "active": {}, "role": 3j}
    errors = errors_of(users, raw)
    assert set(errors) == {"external_id", "email", "age", "active", "role"}


# --- the format functions equal the plain regexes they replaced -----------------
# The hot path calls the *_text functions; their regexes were tuned for speed
# (lookarounds, a possessive quantifier, the top-label test outside the regex).
# These are the earlier, plainer definitions, kept as the reference.

_REF_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_REF_HOSTNAME = re.compile(rf"{_REF_LABEL}(?:\.{_REF_LABEL})*\Z")
_REF_EMAIL = re.compile(rf"[^\s@\x00-\x1f\x7f]{{1,64}}@({_REF_LABEL}(?:\.{_REF_LABEL})+)\Z")
_REF_YMD = r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_REF_DATE = re.compile(rf"{_REF_YMD}\Z")
_REF_DATE_TIME = re.compile(
    rf"{_REF_YMD}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)


def _ref_real_date(match: re.Match[str]) -> bool:
    year, month, day = match.group(1, 2, 3)
    if year == "0000":
        return False
    try:
        dt.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def _ref_hostname(text: str) -> bool:
    if len(text) > 253 or _REF_HOSTNAME.match(text) is None:
        return False
    return not text.rpartition(".")[2].isdigit()


def _ref_email(text: str) -> bool:
    match = _REF_EMAIL.match(text) if len(text) <= 254 else None
    return match is not None and not match.group(1).rpartition(".")[2].isdigit()


def _ref_date(text: str) -> bool:
    match = _REF_DATE.match(text)
    return match is not None and _ref_real_date(match)


def _ref_date_time(text: str) -> bool:
    match = _REF_DATE_TIME.match(text)
    return match is not None and _ref_real_date(match)


_label = st.from_regex(r"\A[A-Za-z0-9-]{0,4}\Z") | st.sampled_from(["a" * 63, "a" * 64, "-a", "a-", "0", "12", "1a"])
_hostish = st.lists(_label, min_size=1, max_size=4).map(".".join) | st.sampled_from(
    ["a." * 126 + "bc", "a." * 126 + "b", "a." * 127 + "b", "ab." * 84 + "c"]
)
_formatish = st.one_of(
    _hostish,
    st.tuples(
        st.from_regex(r"\A[^@]{0,3}\Z") | st.sampled_from(["x" * 64, "x" * 65, "a b", "\x7f", "é"]), _hostish
    ).map("@".join),
    st.tuples(st.sampled_from(["x" * 64, "bob"]), st.sampled_from(["a" * 63 + "." + "b" * 63] * 2)).map(
        lambda parts: parts[0] + "@" + ".".join([parts[1]] * 3) + ".com"
    ),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z"),
    st.from_regex(r"\A(0000|[0-9]{4})-(0[0-9]|1[0-3])-(0[0-9]|[1-3][0-9])\Z"),
    st.from_regex(
        r"\A[0-9]{4}-(0[1-9]|1[0-2])-(2[89]|3[01])[Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,3})?"
        r"([Zz]|[+-][0-2][0-9]:[0-6][0-9])?\n?\Z"
    ),
    st.text(max_size=12),
)


@settings(max_examples=1500, deadline=None)
@given(text=_formatish)
def test_the_tuned_format_functions_equal_the_plain_ones(text: str) -> None:
    assert hostname_text(text) == _ref_hostname(text), text
    assert email_text(text) == _ref_email(text), text
    assert date_text(text) == _ref_date(text), text
    assert date_time_text(text) == _ref_date_time(text), text
    assert (is_hostname(text), is_email(text), is_date(text), is_date_time(text)) == (
        hostname_text(text),
        email_text(text),
        date_text(text),
        date_time_text(text),
    )


@pytest.mark.parametrize("year", ["0000", "0001", "2024", "2023", "1900", "2000"])
@pytest.mark.parametrize("month", ["01", "02", "04", "12"])
@pytest.mark.parametrize("day", ["28", "29", "30", "31"])
def test_the_calendar_shortcut_agrees_on_every_month_end(year: str, month: str, day: str) -> None:
    day_text = f"{year}-{month}-{day}"
    assert date_text(day_text) == _ref_date(day_text)
    assert date_time_text(day_text + "T00:00:00Z") == _ref_date_time(day_text + "T00:00:00Z")


# --- JSON text ------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12),
    st.sampled_from(['"', "\\", "\\\\", '\\"', "\x00", "\x1f", "\x7f", "\u2028", "\u2029", "\ud800", "Zoë", "山田"]),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
)
json_keys = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8) | st.sampled_from(
    ['"', "\\", "\n", "é", "{}"]
)


@settings(max_examples=600, deadline=None)
@given(data=st.dictionaries(json_keys, json_values, max_size=8))
def test_encode_writes_exactly_what_json_dumps_writes(data: dict[str, Any]) -> None:
    assert Product.encode(data) == json.dumps(data, ensure_ascii=False)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_encode_agrees_with_json_dumps_on_any_top_level_value(value: Any) -> None:
    assert Product.encode(value) == json.dumps(value, ensure_ascii=False)  # type: ignore[arg-type]


def test_encode_raises_like_json_dumps_on_what_json_cannot_hold() -> None:
    for bad in ({"x": object()}, {"x": {1, 2}}, {(1, 2): 3}):
        with pytest.raises(TypeError):
            json.dumps(bad, ensure_ascii=False)
        with pytest.raises(TypeError):
            Product.encode(bad)


ROW = {
    "external_id": "u1",
    "email": "user1@example.com",
    "first_name": "Zoë",
    "last_name": "Müller",
    "role": "student",
    "age": "42",
    "active": "yes",
    "created_at": "2024-03-15T09:30:00Z",
}


def test_a_row_of_the_benchmark_shape_takes_the_hot_path(users: Product) -> None:
    expected = {**ROW, "age": 42, "active": True}
    assert users.fast_data(ROW) == expected
    assert users.check(1, ROW) == (expected, [])
    assert users.fast_json(ROW) == json.dumps(expected, ensure_ascii=False)
    assert users.check_json(1, ROW) == (json.dumps(expected, ensure_ascii=False), [])


def test_check_json_of_an_invalid_row_is_the_errors_of_check(users: Product) -> None:
    raw = {**ROW, "email": "bob", "age": "x"}
    assert users.check_json(4, raw) == (None, users.check(4, raw)[1])
    assert [e.field for e in users.check_json(4, raw)[1]] == ["email", "age"]


def test_check_json_of_a_row_the_hot_path_defers_is_still_encoded(users: Product) -> None:
    class Cell(str):
        def strip(self, chars: str | None = None) -> str:
            return self  # a str subclass comes out of coercion: the hot path defers

    raw = {**ROW, "first_name": Cell("Zoë"), "age": 42.0}
    assert users.fast_data(raw) is None
    assert users.check_json(1, raw) == (
        json.dumps({**ROW, "first_name": "Zoë", "age": 42, "active": True}, ensure_ascii=False),
        [],
    )
    assert users.fast_data({**raw, "first_name": "Zoë"}) is not None  # a native float age is fine


def test_check_keeps_the_order_of_the_record_and_leaves_out_empty_cells(users: Product) -> None:
    raw = {"role": " admin ", "first_name": "", "email": "a@b.co", "age": None, "external_id": "x"}
    data, _ = users.check(1, raw)
    assert list(data or {}) == ["role", "email", "external_id"]
    assert users.check_json(1, raw)[0] == '{"role": "admin", "email": "a@b.co", "external_id": "x"}'
