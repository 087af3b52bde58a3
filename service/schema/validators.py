"""The value formats this service asserts, and the two JSON Schema validators built on them (SPEC 6).

Every check of a record uses the same format functions (OUR_FORMATS), because the
validators' built-in format checks differ and jsonschema's default checker silently
accepts `date-time` and `hostname` (see notes/throughput.md): fastjsonschema's compiled
validator (compile_fast) gives the verdict, jsonschema's (full_validator) the per-keyword
errors that become messages, and the generated hot path (codegen.py) calls the `*_text`
forms directly. Both validators also read a schema's `pattern` the same way. This module
is a leaf: it imports no other module of the service.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import fastjsonschema
import jsonschema
from jsonschema import Draft7Validator, FormatChecker, ValidationError

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

# --- the two validators ----------------------------------------------------

# fastjsonschema rewrites every unescaped "$" in a pattern to "\Z" (ECMA-262
# "$" never matches before a trailing newline; Python's does). jsonschema
# gets the same rewrite, or "FR\n" would pass one validator and fail the other.
_DOLLAR = re.compile(r"(?<!\\)\$")


@functools.lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a schema pattern the way fastjsonschema does."""
    return re.compile(_DOLLAR.sub(r"\\Z", pattern))


def _pattern_keyword(
    validator: Draft7Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """Replacement for jsonschema's `pattern` keyword, anchored like fastjsonschema."""
    if validator.is_type(instance, "string") and pattern_regex(pattern).search(instance) is None:
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
