"""Reading a product's schema file, and refusing a schema this service could not honour (SPEC 6).

A schema is JSON Schema draft 7 with an object at the top, one supported type per
property, only the formats this service asserts (validators.OUR_FORMATS), patterns that
compile, aliases that name one field each, and an `x-key` that every valid row carries as
text. check_supported refuses anything else with a ConfigError naming the problem, so
that a schema the coercers or validators would silently misread never loads. The
registry (products.py) calls read_schema per schemas/*.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import jsonschema
from jsonschema import Draft7Validator

from service.errors import ConfigError
from service.schema.coerce import SUPPORTED_TYPES
from service.schema.headers import header_key
from service.schema.validators import OUR_FORMATS, pattern_regex

_DRAFT7_URIS: Final = {"http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema"}


def read_schema(path: Path) -> Any:
    """Read one schema file, turning unreadable or malformed JSON into a ConfigError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def check_supported(schema: Any) -> None:
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
    if len({header_key(field) for field in properties}) != len(properties):
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
            pattern_regex(prop["pattern"])
        except re.error as exc:
            raise ConfigError(f"{field} pattern: {exc}") from None


def _check_aliases(properties: dict[str, Any]) -> None:
    """Refuse an `x-aliases` that is not a list of non-empty strings, or an alias that matches
    another property's name or alias: a header column must map to one field only."""
    owners = {header_key(field): ("the name", field) for field in properties}
    for field, prop in properties.items():
        aliases = prop.get("x-aliases", [])
        if not isinstance(aliases, list):
            raise ConfigError(f"property {field}: x-aliases must be a list of non-empty strings, not {aliases!r}")
        for alias in aliases:
            if not isinstance(alias, str) or not alias.strip():
                raise ConfigError(f"property {field}: alias {alias!r} in x-aliases is not a non-empty string")
            what, owner = owners.setdefault(header_key(alias), ("an alias", field))
            if owner != field:
                raise ConfigError(
                    f"property {field}: alias {alias!r} is ambiguous: it is also {what} of property {owner}"
                )
