"""Explanation: a rejected record's problems as RowError sentences a customer can act on (SPEC 6).

The reference way is jsonschema (validators.full_validator) on the whole record, each of
its per-keyword errors worded by _sentence, one message per field, in the schema's field
order (Explainer.explain_fully). That walks every property, about 40 us a row, so a
record whose fields are all known and whose required ones are present is explained field
by field instead (Explainer.explain): by the generated code's own failure tests
(codegen.FAILS), worded the same way, or by the field's own validators. Both say the same;
tests/unit/test_validators_agree.py holds the proof.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import fastjsonschema
from jsonschema import Draft7Validator, ValidationError

from service.errors import RowError
from service.schema.codegen import CHECKED, FAILS, compared, compilable
from service.schema.coerce import show
from service.schema.validators import compile_fast, full_validator

_FORMAT_WORDS: Final = {
    "email": "a valid email address",
    "hostname": "a valid hostname",
    "date": "a valid date (YYYY-MM-DD)",
    "date-time": "a valid date-time (RFC 3339, e.g. 2024-05-01T09:30:00Z)",
}
# The failure tests as functions of (value, limit), for explaining a rejected record (_why).
_TESTS: Final = {k: eval(f"lambda v, x: {t.format(v='v', x='x')}") for k, t in FAILS.items()}  # noqa: S307
_WORDED: Final = frozenset(FAILS) - {"exclusiveMinimum", "exclusiveMaximum"}  # _sentence words them itself


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


def _why(field: str, prop: dict[str, Any]) -> Callable[[Any], str | None] | None:
    """What is wrong with a coerced value of the field, by the generated code's tests: the
    sentence of its first failing keyword in the schema's order (as jsonschema would say
    it), or None when it passes. None instead of a function: a keyword _sentence cannot word."""
    tests = []
    for keyword, limit in prop.items():
        if keyword in CHECKED[prop["type"]]:
            if keyword not in _WORDED:
                return None
            tests.append((keyword, limit, compared(prop, keyword), _TESTS[keyword]))

    def why(value: Any) -> str | None:
        for keyword, limit, compared_with, fails in tests:
            if fails(value, compared_with):
                return _sentence(field, keyword, limit, value, prop, "")
        return None

    return why


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


class Explainer:
    """One product's wording of a rejected record: every problem, one per field, in field order."""

    __slots__ = ("_alone", "_order", "_why", "full", "name", "required")

    def __init__(self, name: str, schema: dict[str, Any]) -> None:
        self.name = name
        properties: dict[str, Any] = schema["properties"]
        self.required: tuple[str, ...] = tuple(schema.get("required", ()))
        self._order = {field: index for index, field in enumerate(properties)}
        # The explaining validator of the whole schema.
        self.full = full_validator(schema)
        # Each property alone, for explaining a rejected record cheaply (see explain); None
        # when a property cannot stand alone (a $ref into the schema's definitions...).
        self._alone: dict[str, Any] | None
        try:
            self._alone = {field: _alone(prop) for field, prop in properties.items()}
        except Exception:  # fastjsonschema and jsonschema raise their own kinds
            self._alone = None
        # Per field, the cheapest explanation of a bad value (see explain); only when the
        # generated tests are the whole schema of the field.
        self._why = {field: _why(field, prop) for field, prop in properties.items()} if compilable(schema) else None

    def explain(self, source_row: int, data: dict[str, Any], failed: dict[str, str], verdict: str) -> list[RowError]:
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
        for error in self.full.iter_errors(data):
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
