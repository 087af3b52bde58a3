"""Record checking: coerce and validate one record of a product, as data or as JSON text (SPEC 6).

Two paths judge a record, and must agree. The hot path is the generated code of the
record's order of fields (codegen.Plan), built on first sight of that order and
remembered; it proves most valid records valid in one pass. The reference path
(RecordCheck.reference_check) runs the coercers (coerce.py), then fastjsonschema for a
verdict, and words a rejected record through the product's Explainer (explain.py). A
valid record can come back as its JSON text, exactly json.dumps(ensure_ascii=False)
(encode_json), the text the validate stage copies into the customer's table.

A record of JSON values (a JSON Lines object: check_values_json) takes the same two paths
with coercers of its own (coerce.json_values): a string is coerced as a cell, any other
value is taken only as itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import fastjsonschema

from service.errors import RowError
from service.schema.codegen import Plan, compilable
from service.schema.coerce import ABSENT, Coercer, CoercionError, build_coercer, json_values
from service.schema.validators import compile_fast


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

# Words a rejected record: (source_row, coerced data, coercion message per failed field, verdict).
Explain = Callable[[int, dict[str, Any], dict[str, str], str], list[RowError]]


class RecordCheck:
    """One product's row check: the generated code per order of fields, else the reference path.

    Product is one: check and check_json run once per row, and as inherited methods they cost
    a row what they cost when Product defined them (a call through a part would not).
    """

    __slots__ = (
        "_coercers",
        "_compilable",
        "_explain",
        "_fast",
        "_json_coercers",
        "_json_plans",
        "_json_properties",
        "_max_plans",
        "_name",
        "_plans",
        "_properties",
        "_required",
    )

    def __init__(self, name: str, schema: dict[str, Any], explain: Explain, max_plans: int) -> None:
        self._name = name
        properties: dict[str, Any] = schema["properties"]
        self._properties = properties
        self._required: tuple[str, ...] = tuple(schema.get("required", ()))
        self._coercers: dict[str, Coercer] = {f: build_coercer(p) for f, p in properties.items()}
        self._fast = compile_fast(schema)
        self._explain = explain
        self._compilable = compilable(schema)
        # Field order of a record (its keys, in order) -> generated functions, or None: no fast path.
        self._plans: dict[tuple[Any, ...], Plan | None] = {}
        self._max_plans = max_plans
        # The same for records of JSON values (check_values_json).
        self._json_properties = {f: json_values(p) for f, p in properties.items()}
        self._json_coercers: dict[str, Coercer] = {f: build_coercer(p) for f, p in self._json_properties.items()}
        self._json_plans: dict[tuple[Any, ...], Plan | None] = {}

    def check(self, source_row: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[RowError]]:
        """Coerce and validate one record: (data, []) if valid, else (None, errors).

        raw maps fields to cells, in the record's order, which data keeps.
        """
        try:
            plan = self._plans[tuple(raw)]
        except KeyError:
            plan = self.plan(raw)
        if plan is not None:
            data = plan.data(*raw.values())
            if data is not None:
                return data, []
        return self.reference_check(source_row, raw)

    def check_json(self, source_row: int, raw: dict[str, Any]) -> tuple[str | None, list[RowError]]:
        """Like check, but a valid record comes back as its JSON text (see encode_json)."""
        try:
            plan = self._plans[tuple(raw)]
        except KeyError:
            plan = self.plan(raw)
        if plan is not None:
            text = plan.json(*raw.values())
            if text is not None:
                return text, []
        data, errors = self.reference_check(source_row, raw)
        return (None if data is None else encode_json(data)), errors

    def check_values_json(self, source_row: int, raw: dict[str, Any]) -> tuple[str | None, list[RowError]]:
        """check_json for a record of JSON values (a JSON Lines object): a string is coerced as a
        cell is, null is absent, any other value is taken as it is, where the field's type takes
        it (42 for an integer, true for a boolean; 42 is not a string), else the record is rejected."""
        try:
            plan = self._json_plans[tuple(raw)]
        except KeyError:
            plan = self._plan(raw, self._json_plans, self._json_properties)
        if plan is not None:
            text = plan.json(*raw.values())
            if text is not None:
                return text, []
        data, errors = self._reference(source_row, raw, self._json_coercers)
        return (None if data is None else encode_json(data)), errors

    def fast_data(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The hot path alone: check's data for a record it proves valid, else None (slow path)."""
        plan = self.plan(raw)
        return None if plan is None else plan.data(*raw.values())

    def fast_json(self, raw: dict[str, Any]) -> str | None:
        """The hot path alone: check_json's text for a record it proves valid, else None (slow path)."""
        plan = self.plan(raw)
        return None if plan is None else plan.json(*raw.values())

    def plan(self, raw: dict[str, Any]) -> Plan | None:
        """The generated functions for the order of raw's fields, built on first sight (None: none)."""
        return self._plan(raw, self._plans, self._properties)

    def json_plan(self, keys: tuple[str, ...]) -> Plan | None:
        """The generated functions for records of JSON values with these fields in this order
        (check_values_json's fast path; None: that record takes the slow path). A caller that
        keeps it per order of keys saves check_values_json's lookup on every record."""
        return self._plan_of(keys, self._json_plans, self._json_properties)

    def _plan(
        self, raw: dict[str, Any], plans: dict[tuple[Any, ...], Plan | None], properties: dict[str, Any]
    ) -> Plan | None:
        return self._plan_of(tuple(raw), plans, properties)

    def _plan_of(
        self, keys: tuple[Any, ...], plans: dict[tuple[Any, ...], Plan | None], properties: dict[str, Any]
    ) -> Plan | None:
        if keys in plans:
            return plans[keys]
        if len(plans) >= self._max_plans:
            return None  # a file whose records vary their fields endlessly: the slow path
        required = self._required
        plan = None  # an unknown or a missing required field never passes: no fast path
        if (
            self._compilable
            and all(key.__class__ is str and key in properties for key in keys)
            and set(required) <= set(keys)
        ):
            plan = Plan(self._name, properties, required, keys)
        plans[keys] = plan
        return plan

    def reference_check(self, source_row: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[RowError]]:
        """What check answers, the slow way: the coercers, fastjsonschema, and jsonschema's messages."""
        return self._reference(source_row, raw, self._coercers)

    def _reference(
        self, source_row: int, raw: dict[str, Any], coercers: dict[str, Coercer]
    ) -> tuple[dict[str, Any] | None, list[RowError]]:
        data, failed = self._coerce(raw, coercers)
        if failed is None:
            try:
                self._fast(data)
                return data, []
            except fastjsonschema.JsonSchemaException as exc:
                return None, self._explain(source_row, data, {}, str(exc))
        return None, self._explain(source_row, data, failed, "")

    def coerce(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str] | None]:
        """Coerce each cell: (the data, the coercion message of each field that failed or None)."""
        return self._coerce(raw, self._coercers)

    @staticmethod
    def _coerce(raw: dict[str, Any], coercers: dict[str, Coercer]) -> tuple[dict[str, Any], dict[str, str] | None]:
        data: dict[str, Any] = {}
        failed: dict[str, str] | None = None
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
