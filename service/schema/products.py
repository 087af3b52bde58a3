"""Products: one JSON Schema per product, and the registry of those in schemas/ (SPEC 6).

A Product is what the stages see of a product: its name, schema, fields, required fields
and key, and three jobs done by parts built once from the schema. It is the row check
(records.RecordCheck: check and check_json, once per row; the hot path and the reference
path), by inheritance, so that a row pays no call on top; it hands the header rules to a
HeaderMap (headers.py: map_header, map_keys, aliases_used, once per file) and the wording
of a rejected record to an Explainer (explain.py). A schema is refused before any part is
built (loading.check_supported), and ProductRegistry loads one Product per
schemas/<name>.json.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.errors import ConfigError, RowError, UnknownProduct
from service.schema.explain import Explainer
from service.schema.headers import ColumnMap, HeaderMap
from service.schema.loading import check_supported, read_schema
from service.schema.records import RecordCheck, encode_json

PRODUCT_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_MAX_NAME = 63  # a product name becomes a Postgres table name, which is cut at 63 bytes
_MAX_PLANS = 256  # field orders remembered per product (a key=value file may vary them per record)


class Product(RecordCheck):
    """One importable product: its schema, its header rules and its row check."""

    __slots__ = ("_explainer", "_full", "_header", "fields", "key", "name", "required", "schema")

    def __init__(self, name: str, schema: dict[str, Any]) -> None:
        try:
            check_supported(schema)
        except ConfigError as exc:
            raise ConfigError(f"product {name}: {exc}") from None
        self.name = name
        self.schema = schema
        properties: dict[str, Any] = schema["properties"]
        self.fields: tuple[str, ...] = tuple(properties)
        self.required: tuple[str, ...] = tuple(schema.get("required", ()))
        # The field upsert and replace match rows by (SPEC 12); None: only append is possible.
        self.key: str | None = schema.get("x-key")
        self._header = HeaderMap(properties, self.required)
        self._explainer = Explainer(name, schema)
        self._full = self._explainer.full  # the whole schema's explaining validator, which tests use
        super().__init__(name, schema, self._explainer.explain, _MAX_PLANS)

    def __repr__(self) -> str:
        return f"Product({self.name!r})"

    def map_header(self, names: list[str]) -> ColumnMap:
        """Match header names and aliases to fields; a name twice, two columns for one field
        or a missing required column rejects the file."""
        return self._header.map_header(names)

    def map_keys(self, keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """Map the keys of key=value records to fields (names or aliases), returning the mapping
        and the unknown keys; two keys for one field reject the file (FileRejected, no line)."""
        return self._header.map_keys(keys)

    def aliases_used(self, keys: Iterable[str]) -> list[tuple[str, str]]:
        """(key, field) for each key that maps through an alias, sorted by key; like map_keys,
        two keys for one field reject the file."""
        return self._header.aliases_used(keys)

    def explain_fully(
        self, source_row: int, data: dict[str, Any], failed: dict[str, str], verdict: str
    ) -> list[RowError]:
        """List every problem of a rejected record, in field order, with jsonschema on the whole record."""
        return self._explainer.explain_fully(source_row, data, failed, verdict)

    @staticmethod
    def encode(data: dict[str, Any]) -> str:
        """Exactly json.dumps(data, ensure_ascii=False), without building an encoder per call."""
        return encode_json(data)


class ProductRegistry:
    """The products found in the schemas directory, by name."""

    def __init__(self, products: dict[str, Product]) -> None:
        self._products = products

    @classmethod
    def load(cls, schemas_dir: Path) -> ProductRegistry:
        """Load one Product per schemas/<name>.json whose name is a valid product name."""
        if not schemas_dir.is_dir():
            raise ConfigError(f"{schemas_dir}: not a directory of product schemas")
        products: dict[str, Product] = {}
        for path in sorted(schemas_dir.glob("*.json")):
            if PRODUCT_NAME.match(path.stem) is None or not path.is_file():
                continue
            if len(path.stem.encode()) > _MAX_NAME:
                raise ConfigError(f"{path}: product name longer than {_MAX_NAME} characters")
            try:
                products[path.stem] = Product(path.stem, read_schema(path))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return cls(products)

    def get(self, name: str) -> Product:
        """Return the named product, or raise UnknownProduct listing the known ones."""
        try:
            return self._products[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "none"
            raise UnknownProduct(f"unknown product type {name!r}; known: {known}", field="product_type") from None

    def names(self) -> list[str]:
        """The product names, sorted."""
        return sorted(self._products)
