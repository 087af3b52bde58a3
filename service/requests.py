"""Enqueue requests: checked completely before a job exists, then written atomically."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service import blob, webhooks
from service.config import Config
from service.errors import BlobRefused, RequestRefused
from service.jobs import Job, JobStore, request_hash
from service.products import ProductRegistry

FIELDS = ("customer_id", "product_type", "blob_uri", "options")
OPTION_TYPES: dict[str, type] = {
    "format": str,
    "delimiter": str,
    "encoding": str,
    "sheet": str,
    "on_invalid": str,
    "dry_run": bool,
    "mode": str,
    "atomic": bool,
    "allow_empty": bool,
    "header_row": int,
    "callback_url": str,
}
FORMATS = ("csv", "tsv", "kv", "xlsx")
ON_INVALID = ("skip", "fail")
MODES = ("append", "upsert", "replace")
MAX_SHEET_ROWS = 1_048_576  # Excel's
MAX_SHEETS = 255  # sheets one job may name (Excel itself caps a workbook only by memory)


@dataclass(frozen=True)
class EnqueueRequest:
    """A request that passed every check that can be made before the job runs."""

    customer_id: str
    product_type: str
    blob_uri: str
    options: dict[str, Any]


def check_request(body: Any, config: Config, products: ProductRegistry) -> EnqueueRequest:
    """Validate an enqueue body; raise RequestRefused naming the offending field."""
    if not isinstance(body, Mapping):
        raise RequestRefused("the request body must be a JSON object", field=None)
    _refuse_nul(body, "")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestRefused(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    for name in FIELDS[:3]:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise RequestRefused(f"{name} is required and must be a non-empty string", field=name)
    customer = body["customer_id"]
    if customer not in config.customers:
        raise RequestRefused(f"unknown customer {customer!r}", field="customer_id")
    product = products.get(body["product_type"])
    options = check_options(body.get("options", {}))
    if options.get("mode", "append") != "append" and product.key is None:
        raise RequestRefused(
            f"product {product.name} has no x-key in its schema, so only mode append is possible",
            field="options.mode",
        )
    try:
        # An unreachable S3 endpoint is no fault of the request: BlobUnavailable goes up (503).
        blob.check(blob.locate(body["blob_uri"], customer, config), config.max_file_bytes)
    except BlobRefused as exc:
        raise RequestRefused(str(exc), field="blob_uri") from None
    if "callback_url" in options:
        problem = webhooks.refusal(options["callback_url"], customer, config.customer_settings.get(customer))
        if problem is not None:
            raise RequestRefused(problem, field="options.callback_url")
    return EnqueueRequest(customer, body["product_type"], body["blob_uri"], options)


def _refuse_nul(value: Any, where: str) -> None:
    """Refuse NUL characters anywhere: Postgres text and jsonb cannot hold them."""
    if isinstance(value, str) and "\x00" in value:
        raise RequestRefused(f"{where or 'the request'} contains a NUL character", field=where or None)
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            _refuse_nul(str(key), path)
            _refuse_nul(item, path)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul(item, where)


def check_options(options: Any) -> dict[str, Any]:
    """Validate the options object: known names, right types, allowed values."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise RequestRefused("options must be an object", field="options")
    checked = dict(options)
    for name, value in options.items():
        expected = OPTION_TYPES.get(name)
        if expected is None:
            raise RequestRefused(f"unknown option {name!r} (known: {', '.join(OPTION_TYPES)})", field=f"options.{name}")
        if name == "sheet" and isinstance(value, list):
            continue  # several sheets read as one file: _check_sheets
        if expected is int and isinstance(value, float) and value.is_integer():
            checked[name] = value = int(value)  # a gRPC Struct carries every number as a double
        # A JSON true is a Python int too: refuse it where a number is asked for.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            names = {str: "str", bool: "bool", int: "whole number"}
            kind = "sheet name or a list of sheet names" if name == "sheet" else names[expected]
            raise RequestRefused(f"option {name} must be a {kind}", field=f"options.{name}")
    _check_option_values(checked)
    return checked


def _check_option_values(options: Mapping[str, Any]) -> None:
    """Refuse option values that can never work."""
    if options.get("format", "csv") not in FORMATS:
        raise RequestRefused(f"option format must be one of {', '.join(FORMATS)}", field="options.format")
    if options.get("on_invalid", "skip") not in ON_INVALID:
        raise RequestRefused("option on_invalid must be 'skip' or 'fail'", field="options.on_invalid")
    mode = options.get("mode", "append")
    if mode not in MODES:
        raise RequestRefused(f"option mode must be one of {', '.join(MODES)}, got {mode!r}", field="options.mode")
    if mode != "append" and options.get("atomic") is False:
        raise RequestRefused(
            f"option atomic cannot be false in mode {mode}: upsert and replace always publish in one commit",
            field="options.atomic",
        )
    if "allow_empty" in options and mode != "replace":
        raise RequestRefused("option allow_empty applies only to mode replace", field="options.allow_empty")
    delimiter = options.get("delimiter")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise RequestRefused(
            "option delimiter must be one character (not a quote or newline)", field="options.delimiter"
        )
    encoding = options.get("encoding")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise RequestRefused(
                f"option encoding {encoding!r} is not a known codec", field="options.encoding"
            ) from None
    header_row = options.get("header_row")
    if header_row is not None and not 1 <= header_row <= MAX_SHEET_ROWS:
        raise RequestRefused(
            f"option header_row must be a sheet row from 1 to {MAX_SHEET_ROWS:,}, got {header_row}",
            field="options.header_row",
        )
    if "sheet" in options:
        _check_sheets(options["sheet"])
    callback_url = options.get("callback_url")
    if callback_url is not None:
        problem = webhooks.url_problem(callback_url)
        if problem is not None:
            raise RequestRefused(f"option callback_url {problem}", field="options.callback_url")


def _check_sheets(sheet: str | list[Any]) -> None:
    """Option sheet: one sheet's name, or a list of distinct names read one after the other."""
    if isinstance(sheet, str):
        if not sheet:
            raise RequestRefused("option sheet must be a non-empty sheet name", field="options.sheet")
        return
    if not sheet or len(sheet) > MAX_SHEETS:
        raise RequestRefused(f"option sheet: a list must name 1 to {MAX_SHEETS} sheets", field="options.sheet")
    for name in sheet:
        if not isinstance(name, str) or not name:
            raise RequestRefused(
                "option sheet: each item of the list must be a non-empty sheet name", field="options.sheet"
            )
    twice = sorted({name for name in sheet if sheet.count(name) > 1})
    if twice:
        raise RequestRefused(f"option sheet names {twice[0]!r} twice; a sheet is read once", field="options.sheet")


def enqueue(request: EnqueueRequest, jobs: JobStore, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Create the job and its first message in one transaction; (job, created)."""
    fingerprint = request_hash(
        {
            "customer_id": request.customer_id,
            "product_type": request.product_type,
            "blob_uri": request.blob_uri,
            "options": request.options,
        }
    )
    return jobs.create_job(
        request.customer_id,
        request.product_type,
        request.blob_uri,
        request.options,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
