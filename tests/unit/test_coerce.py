"""Coercion of raw cells into schema-typed values (SPEC 6)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.schema.coerce import (
    ABSENT,
    BOOLEAN_WORDS,
    EXACT_CLASSES,
    CoercionError,
    build_coercer,
    inline_coercion,
    show,
)

INTEGER = build_coercer({"type": "integer"})
NUMBER = build_coercer({"type": "number"})
BOOLEAN = build_coercer({"type": "boolean"})
TEXT = build_coercer({"type": "string"})
DATE = build_coercer({"type": "string", "format": "date"})
DATE_TIME = build_coercer({"type": "string", "format": "date-time"})
EMAIL = build_coercer({"type": "string", "format": "email"})


def rejects(coerce: Any, value: Any) -> str:
    """Return the coercion error message for a value that must be refused."""
    with pytest.raises(CoercionError) as caught:
        coerce(value)
    return str(caught.value)


# --- absent values ---------------------------------------------------------


@pytest.mark.parametrize("coerce", [INTEGER, NUMBER, BOOLEAN, TEXT, DATE, DATE_TIME])
@pytest.mark.parametrize("value", [None, "", "   ", "\t\r\n"])
def test_an_empty_or_blank_cell_or_none_is_absent_for_every_type(coerce: Any, value: Any) -> None:
    assert coerce(value) is ABSENT


# --- strings ---------------------------------------------------------------


def test_text_is_stripped_of_surrounding_white_space_only() -> None:
    assert TEXT("  Jean  Dupont \t") == "Jean  Dupont"


def test_text_keeps_its_case_and_inner_characters() -> None:
    assert TEXT(" Bob@Example.COM ") == "Bob@Example.COM"
    assert EMAIL(" Bob@Example.COM ") == "Bob@Example.COM"


def test_text_that_looks_like_a_number_stays_text() -> None:
    assert TEXT("007") == "007"


def test_a_subclass_of_str_is_treated_as_text() -> None:
    class Cell(str):
        pass

    assert TEXT(Cell(" x ")) == "x"
    assert INTEGER(Cell(" 7 ")) == 7


# --- integer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", 42), ("+42", 42), ("-3", -3), (" 7 ", 7), ("0", 0), ("-0", 0), ("007", 7)],
)
def test_integer_text_with_an_optional_sign_is_accepted(text: str, expected: int) -> None:
    assert INTEGER(text) == expected
    assert type(INTEGER(text)) is int


@pytest.mark.parametrize("text", ["4.5", "4e2", "42.0", "1_000", "0x1F", "four", "4 2", "--4", "+", "٤٢", "４２"])
def test_integer_text_that_is_not_plain_digits_is_rejected(text: str) -> None:
    assert rejects(INTEGER, text) == f"{text!r} is not an integer"


def test_integer_text_beyond_pythons_digit_limit_is_rejected_not_raised() -> None:
    assert "too many digits" in rejects(INTEGER, "9" * 5000)


def test_integer_from_a_native_int_is_kept() -> None:
    assert INTEGER(42) == 42


def test_integer_from_an_integral_native_float_becomes_an_int() -> None:
    assert INTEGER(42.0) == 42
    assert type(INTEGER(42.0)) is int


@pytest.mark.parametrize("value", [4.5, float("inf"), float("nan")])
def test_integer_from_a_non_integral_native_float_is_rejected(value: float) -> None:
    assert "is not an integer" in rejects(INTEGER, value)


@pytest.mark.parametrize("value", [True, dt.date(2024, 1, 5), dt.time(10, 0), b"42"])
def test_integer_from_a_native_of_the_wrong_kind_is_rejected(value: Any) -> None:
    assert rejects(INTEGER, value).startswith("expected an integer, got a ")


# --- number ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5", 1.5), ("-2", -2.0), ("+.5", 0.5), ("3.", 3.0), ("1e3", 1000.0), ("2E-2", 0.02)],
)
def test_number_text_in_python_float_syntax_is_accepted(text: str, expected: float) -> None:
    assert NUMBER(text) == expected


@pytest.mark.parametrize(
    "text",
    ["inf", "-inf", "nan", "NaN", "Infinity", "-INFINITY", "1_000", "1,5", "e3", ".", "0x10", "١"],
)
def test_number_text_with_inf_nan_underscores_or_other_syntax_is_rejected(text: str) -> None:
    assert rejects(NUMBER, text) == f"{text!r} is not a number"


def test_number_text_that_overflows_to_infinity_is_rejected() -> None:
    assert "too large" in rejects(NUMBER, "1e999")


def test_number_from_native_int_and_float_is_kept() -> None:
    assert NUMBER(3) == 3
    assert NUMBER(2.5) == 2.5


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_number_from_a_non_finite_native_float_is_rejected(value: float) -> None:
    assert "is not a number" in rejects(NUMBER, value)


@pytest.mark.parametrize("value", [False, dt.datetime(2024, 1, 5)])
def test_number_from_a_native_of_the_wrong_kind_is_rejected(value: Any) -> None:
    assert rejects(NUMBER, value).startswith("expected a number, got a ")


# --- boolean ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["true", "TRUE", "True", "yes", "YES", "1", " yes "])
def test_boolean_true_words_are_accepted_in_any_case(text: str) -> None:
    assert BOOLEAN(text) is True


@pytest.mark.parametrize("text", ["false", "FALSE", "no", "No", "0"])
def test_boolean_false_words_are_accepted_in_any_case(text: str) -> None:
    assert BOOLEAN(text) is False


@pytest.mark.parametrize("text", ["y", "n", "on", "off", "2", "t", "truth", "1.0"])
def test_boolean_other_words_are_rejected(text: str) -> None:
    assert rejects(BOOLEAN, text).startswith(f"{text!r} is not a boolean")


def test_boolean_from_a_native_bool_is_kept() -> None:
    assert BOOLEAN(True) is True
    assert BOOLEAN(False) is False


def test_boolean_from_a_native_zero_or_one_matches_the_text_rule() -> None:
    assert BOOLEAN(1) is True
    assert BOOLEAN(0.0) is False


@pytest.mark.parametrize("value", [2, 0.5, dt.date(2024, 1, 1)])
def test_boolean_from_another_native_is_rejected(value: Any) -> None:
    assert rejects(BOOLEAN, value).startswith("expected true/false, got a ")


# --- XLSX natives for string fields ----------------------------------------


def test_a_native_int_for_a_string_field_becomes_its_digits() -> None:
    assert TEXT(12345) == "12345"


def test_an_integral_native_float_for_a_string_field_loses_the_trailing_zero() -> None:
    assert TEXT(12345.0) == "12345"


def test_a_fractional_native_float_for_a_string_field_keeps_its_shortest_form() -> None:
    assert TEXT(12.5) == "12.5"


def test_a_native_bool_for_a_string_field_is_rejected() -> None:
    assert rejects(TEXT, True) == "expected text, got a boolean (true)"


def test_a_non_finite_native_float_for_a_string_field_is_rejected() -> None:
    assert rejects(TEXT, float("nan")).startswith("expected text")


def test_a_date_cell_for_a_plain_string_field_becomes_an_iso_date_time() -> None:
    assert TEXT(dt.date(2024, 1, 5)) == "2024-01-05T00:00:00"
    assert TEXT(dt.datetime(2024, 1, 5, 10, 30)) == "2024-01-05T10:30:00"


def test_a_time_cell_for_a_plain_string_field_becomes_an_iso_time() -> None:
    assert TEXT(dt.time(10, 30)) == "10:30:00"


def test_an_unknown_native_for_a_string_field_is_rejected_naming_its_kind() -> None:
    assert rejects(TEXT, b"x") == "expected text, got a bytes (b'x')"


# --- XLSX natives for date and date-time fields ----------------------------


def test_a_date_cell_for_a_date_field_becomes_yyyy_mm_dd() -> None:
    assert DATE(dt.date(2024, 2, 29)) == "2024-02-29"


def test_a_midnight_datetime_cell_for_a_date_field_becomes_yyyy_mm_dd() -> None:
    assert DATE(dt.datetime(2024, 2, 29, 0, 0)) == "2024-02-29"


def test_a_datetime_cell_with_a_time_of_day_for_a_date_field_is_rejected() -> None:
    assert "time of day" in rejects(DATE, dt.datetime(2024, 2, 29, 13, 5))


@pytest.mark.parametrize("value", [45000, 45000.0, True, dt.time(1, 2)])
def test_a_non_date_native_for_a_date_field_is_rejected(value: Any) -> None:
    assert rejects(DATE, value).startswith("expected a date (YYYY-MM-DD), got a ")


def test_a_naive_datetime_cell_for_a_date_time_field_is_read_as_utc() -> None:
    assert DATE_TIME(dt.datetime(2024, 5, 1, 9, 30)) == "2024-05-01T09:30:00Z"
    assert DATE_TIME(dt.datetime(2024, 5, 1, 9, 30, 0, 250)) == "2024-05-01T09:30:00.000250Z"


def test_an_aware_datetime_cell_for_a_date_time_field_keeps_its_offset() -> None:
    moment = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert DATE_TIME(moment) == "2024-05-01T09:30:00+02:00"


def test_a_date_cell_for_a_date_time_field_becomes_midnight_utc() -> None:
    assert DATE_TIME(dt.date(2024, 5, 1)) == "2024-05-01T00:00:00Z"


@pytest.mark.parametrize("value", [1714555800, 1.5, False, dt.time(9, 30)])
def test_a_non_date_native_for_a_date_time_field_is_rejected(value: Any) -> None:
    assert rejects(DATE_TIME, value).startswith("expected a date-time, got a ")


def test_text_for_a_date_field_is_only_stripped_and_left_to_the_validator() -> None:
    assert DATE(" 2024-1-5 ") == "2024-1-5"


# --- messages ----------------------------------------------------------------


def test_long_values_are_cut_in_messages() -> None:
    shown = show("x" * 1000)
    assert len(shown) == 60
    assert shown.endswith("...")


def test_dates_and_booleans_are_shown_the_way_a_customer_writes_them() -> None:
    assert show(dt.date(2024, 1, 5)) == "2024-01-05"
    assert show(False) == "false"


# --- inline coercion: the hot path's copy of every coercer --------------------

PROPS = [
    {"type": "string"},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "date-time"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
]


class Cell(str):
    """A str subclass, as a reader might one day yield."""


class Shouty(str):
    """A str subclass whose strip returns another subclass instance."""

    def strip(self, chars: str | None = None) -> str:
        return Shouty(str.strip(self, chars).upper())


def inline(prop: dict[str, Any]) -> Any:
    """Wrap inline_coercion's lines into a function of one cell."""
    lines, names = inline_coercion(prop, "cell", "value", "_p_")
    source = "def run(cell):\n" + "".join(f"    {line}\n" for line in lines) + "    return value\n"
    exec(source, names)
    return names["run"]


INLINE = [(prop, build_coercer(prop), inline(prop)) for prop in PROPS]
text_cells = st.one_of(
    st.text(max_size=8),
    st.from_regex(r"\A[ \t]?[+-]?[0-9]{0,20}(\.[0-9]*)?([eE][+-]?[0-9]+)?[ \t]?\Z"),
    st.sampled_from(["٤٢", "４２", "²", "9" * 18, "9" * 19, "9" * 5000, "1e999", "nan", "inf", "1_0", "0x1F"]),
    st.sampled_from(list(BOOLEAN_WORDS)).flatmap(
        lambda word: st.sampled_from([word, word.upper(), word.title(), word.swapcase(), f" {word}", f"{word}\n"])
    ),
    st.sampled_from(["2024-02-29", "2024-05-01T09:30:00Z", " 2024-1-5 ", "", " ", "\t\r\n", "\x00"]),
)
native_cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.times(),
    st.binary(max_size=3),
    text_cells.map(Cell),
    text_cells.map(Shouty),
    st.just(object()),
)


def outcome(coerce: Any, cell: Any) -> tuple[str, Any]:
    """("value", v) or ("error", message) for one coercion."""
    try:
        return "value", coerce(cell)
    except CoercionError as exc:
        return "error", str(exc)


@pytest.mark.parametrize(("prop", "coerce", "fast"), INLINE, ids=[str(p) for p in PROPS])
@settings(max_examples=400, deadline=None)
@given(cell=st.one_of(text_cells, native_cells))
def test_inline_coercion_returns_what_the_coercer_returns_or_defers(
    prop: Any, coerce: Any, fast: Any, cell: Any
) -> None:
    expected = outcome(coerce, cell)
    got = outcome(fast, cell)
    if got[0] == "error":
        # Deferring is always allowed; inventing an error is not.
        exact = EXACT_CLASSES[prop["type"]]
        assert expected[0] == "error" or (expected[1] is not ABSENT and expected[1].__class__ not in exact), (
            cell,
            expected,
        )
    else:
        assert expected[0] == "value", (cell, got)
        assert got[1] is ABSENT or got[1].__class__ in EXACT_CLASSES[prop["type"]], (cell, got)
        assert got[1].__class__ is expected[1].__class__ and got[1] == expected[1], (cell, got, expected)


def test_inline_coercion_takes_its_shortcuts_on_ordinary_text() -> None:
    integer, number, boolean = (inline({"type": kind}) for kind in ("integer", "number", "boolean"))
    assert integer("42") == 42 and type(integer("42")) is int
    assert number("42") == 42.0 and type(number("42")) is float
    assert [boolean(word) for word in ("yes", "True", "FALSE", "0", " no ")] == [True, True, False, False, False]
    with pytest.raises(CoercionError):
        inline({"type": "string"})(Shouty(" x "))  # a subclass result: deferred to the slow path
