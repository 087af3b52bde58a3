"""The key of a rejected row, for replace (SPEC 12): a table row whose key is on an invalid
line of the file, the key itself readable and valid, is kept, not deleted.

A reject is stored with its cells as read (service.stages.validate.reject_line): a list in the
file's column order, or for key=value files an object keyed by the file's own keys. The
key cell is coerced and checked as the valid rows' key is, by the key's schema property alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import fastjsonschema

from service.schema.coerce import ABSENT, CoercionError, build_coercer, json_values
from service.schema.products import Product
from service.schema.validators import compile_fast

log = logging.getLogger(__name__)


def reader(product: Product, columns: Sequence[str | None]) -> Callable[[Any], str | None] | None:
    """A function from a stored reject's cells to its key when readable and valid (else None);
    None when the product has no key. `columns`: the field of each column (a plan's columns)."""
    key = product.key
    if key is None:
        return None
    prop = product.schema["properties"][key]
    coerce = build_coercer(prop)
    # A keyed record (key=value, JSON Lines) keeps its values as read: JSON values too.
    coerce_keyed = build_coercer(json_values(prop))
    check = _key_check(product, key, prop)
    index = list(columns).index(key) if key in columns else None
    fields: dict[str, bool] = {}  # key=value file key -> whether it names the key field

    def cell(cells: Any) -> Any:
        if isinstance(cells, list):
            return cells[index] if index is not None and index < len(cells) else None
        if isinstance(cells, dict):
            for name, value in cells.items():
                names_key = fields.get(name)
                if names_key is None:
                    names_key = fields[name] = product.map_keys([name])[0].get(name) == key
                if names_key:
                    return value
        return None

    def read(cells: Any) -> str | None:
        raw = cell(cells)
        if raw is None:
            return None
        try:
            value = coerce_keyed(raw) if isinstance(cells, dict) else coerce(raw)
        except CoercionError:
            return None
        if value is ABSENT or not isinstance(value, str) or not check(value):
            return None
        return value

    return read


def _key_check(product: Product, key: str, prop: dict[str, Any]) -> Callable[[str], bool]:
    """Whether a coerced key passes the key's schema property (its definitions included)."""
    schema: dict[str, Any] = {name: product.schema[name] for name in ("definitions", "$defs") if name in product.schema}
    schema.update(type="object", properties={key: prop}, required=[key])
    try:
        validate = compile_fast(schema)
    except Exception as exc:  # fastjsonschema raises its own kinds; a non-empty key is then enough
        log.warning(
            "product %s: the key %s cannot be checked alone (%s); any non-empty key counts", product.name, key, exc
        )
        return bool

    def check(value: str) -> bool:
        try:
            validate({key: value})
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return check
