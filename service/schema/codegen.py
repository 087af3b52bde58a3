"""The hot path's generated code: per product and per order of a record's fields, one Python function (SPEC 6).

A Plan is built from the schema for one order of fields (a header's, or a key=value
record's keys). Its two functions take the cells positionally, coerce and check every
cell in one pass, and return the record as a dict (data) or as its JSON text (json),
exactly what the reference path (the coercers, then fastjsonschema) and
json.dumps(ensure_ascii=False) would give; None when they cannot prove the record valid,
and the record takes the reference path (records.py). They know a fixed set of keywords
(compilable); the failure test of each (FAILS) is also what explain.py words, cheaply,
for a rejected record. tests/unit/test_validators_agree.py holds the proofs of agreement.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from service.schema.coerce import ABSENT, CoercionError, inline_coercion
from service.schema.validators import TEXT_FORMATS, pattern_regex

_ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "readOnly", "writeOnly"}
)
# Keywords that only judge instances of one JSON type; on other types both validators ignore them.
_STRING_ONLY: Final = frozenset({"minLength", "maxLength", "pattern"})
_NUMBER_ONLY: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_ARRAY_ONLY: Final = frozenset({"items", "additionalItems", "maxItems", "minItems", "uniqueItems", "contains"})
_OBJECT_ONLY: Final = frozenset(
    {
        "properties",
        "patternProperties",
        "additionalProperties",
        "required",
        "dependencies",
        "propertyNames",
        "maxProperties",
        "minProperties",
    }
)
# Per property type: the keywords the generated code checks...
CHECKED: Final = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format", "enum"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
}
# ... and all it accepts: those, keywords that cannot apply to the type, and "format",
# whose functions accept every non-string (is_email(42) is True).
_PROPERTY_KEYWORDS: Final = {
    "string": CHECKED["string"] | _NUMBER_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
    "integer": CHECKED["integer"] | {"format"} | _STRING_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
    "number": CHECKED["number"] | {"format"} | _STRING_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
    "boolean": {"format"} | _STRING_ONLY | _NUMBER_ONLY | _ARRAY_ONLY | _OBJECT_ONLY,
}
# "definitions" only matter through "$ref", which is not among them.
_TOP_KEYWORDS: Final = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "definitions",
    *_ANNOTATIONS,
    *_STRING_ONLY,
    *_NUMBER_ONLY,
    *_ARRAY_ONLY,
}
# The failure test of each compiled keyword, as jsonschema words it (v: the value, x: the limit).
FAILS: Final = {
    "minLength": "len({v}) < {x}",
    "maxLength": "len({v}) > {x}",
    "minimum": "{v} < {x}",
    "maximum": "{v} > {x}",
    "exclusiveMinimum": "{v} <= {x}",
    "exclusiveMaximum": "{v} >= {x}",
    "pattern": "{x}({v}) is None",
    "format": "not {x}({v})",
    "enum": "{v} not in {x}",
}


def _keywords(schema: dict[str, Any]) -> set[str]:
    """A schema's keywords, less this service's own `x-` extensions (validators ignore them)."""
    return {name for name in schema if not name.startswith("x-")}


def compilable(schema: dict[str, Any]) -> bool:
    """Tell whether the generated code checks every keyword of a (supported) schema."""
    if not _keywords(schema) <= _TOP_KEYWORDS or not isinstance(schema.get("additionalProperties", False), bool):
        return False
    for prop in schema["properties"].values():
        kind = prop["type"]
        if not _keywords(prop) - {"type"} - _ANNOTATIONS <= _PROPERTY_KEYWORDS[kind]:
            return False
    return True


def compared(prop: dict[str, Any], keyword: str) -> Any:
    """The object the generated code compares with for one keyword of one property."""
    value = prop[keyword]
    if keyword == "pattern":
        return pattern_regex(value).search
    if keyword == "format":
        return TEXT_FORMATS[value]
    if keyword == "enum":  # a str equals only a str, in jsonschema as in Python
        return frozenset(member for member in value if isinstance(member, str))
    return value


def _fstring(pieces: list[tuple[str, str]]) -> str:
    """Source of an f-string from ("text", literal) and ("code", expression) pieces."""
    template = "".join(
        text.replace("{", "{{").replace("}", "}}") if kind == "text" else "{" + text + "}" for kind, text in pieces
    )
    return "f" + repr(template)


class Plan:
    """The generated functions for one order of fields: they take the cells positionally."""

    __slots__ = ("data", "json", "source")

    def __init__(self, name: str, properties: dict[str, Any], required: tuple[str, ...], keys: tuple[str, ...]) -> None:
        names: dict[str, Any] = {"_CoercionError": CoercionError, "_ABSENT": ABSENT, "_TF": ("false", "true")}
        names["_str"] = json.encoder.encode_basestring
        cells = ", ".join(f"r{i}" for i in range(len(keys)))
        body = ["    try:"]
        checks: list[str] = []
        optional: list[int] = []
        for i, key in enumerate(keys):
            prop = properties[key]
            kind = prop["type"]
            lines, more = inline_coercion(prop, f"r{i}", f"v{i}", f"_{i}_")
            names.update(more)
            body += ["        " + line for line in lines]
            fails = []
            for keyword in sorted(CHECKED[kind] & prop.keys()):
                names[f"_{i}_{keyword}"] = compared(prop, keyword)
                fails.append(FAILS[keyword].format(v=f"v{i}", x=f"_{i}_{keyword}"))
            if key in required:
                checks.append(f"    if v{i} is _ABSENT: return None")
            else:
                optional.append(i)
            if fails:
                guard = "" if key in required else f"v{i} is not _ABSENT and "
                checks.append(f"    if {guard}({' or '.join(fails)}): return None")
        body += ["    except _CoercionError:", "        return None", *checks]
        any_absent = " or ".join(f"v{i} is _ABSENT" for i in optional) or "False"

        def rendered(i: int) -> str:
            kind = properties[keys[i]]["type"]
            if kind == "string":
                return f"_str(v{i})"
            if kind == "boolean":
                return f"_TF[v{i}]"
            return f"v{i}!r"  # an exact int or float: json writes its repr

        def member(i: int) -> list[tuple[str, str]]:
            return [("text", json.encoder.encode_basestring(keys[i]) + ": "), ("code", rendered(i))]

        data = [f"def data({cells}):", *body, f"    if {any_absent}:", "        data = {}"]
        text = [f"def text({cells}):", *body, f"    if {any_absent}:", "        parts = []"]
        for i, key in enumerate(keys):
            indent = f"        if v{i} is not _ABSENT: " if i in optional else "        "
            data.append(f"{indent}data[{key!r}] = v{i}")
            text.append(f"{indent}parts.append({_fstring(member(i))})")
        data += [
            "        return data",
            "    return {" + ", ".join(f"{key!r}: v{i}" for i, key in enumerate(keys)) + "}",
        ]
        everything: list[tuple[str, str]] = [("text", "{")]
        for i in range(len(keys)):
            everything += ([("text", ", ")] if i else []) + member(i)
        text += ['        return "{" + ", ".join(parts) + "}"', f"    return {_fstring(everything + [('text', '}')])}"]
        self.source = "\n".join(data + text) + "\n"
        exec(compile(self.source, f"<{name} fields {', '.join(keys)}>", "exec"), names)  # noqa: S102
        self.data: Callable[..., dict[str, Any] | None] = names["data"]
        self.json: Callable[..., str | None] = names["text"]
