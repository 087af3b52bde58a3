"""Enqueue requests: checked completely before a job exists, then written atomically."""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import pkgutil
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.config import Config
from service.errors import BlobRefused, RequestRefused
from service.schema.products import ProductRegistry
from service.sources import blob
from service.stages import uploads as uploads_stage
from service.stages import webhooks
from service.storage.jobs import Job, JobStore, request_hash
from service.storage.uploads import UploadStore

FIELDS = ("customer_id", "product_type", "blob_uri", "options", "upload_id")
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
    "member": str,
}
FORMATS = ("csv", "tsv", "kv", "xlsx", "jsonl")
ON_INVALID = ("skip", "fail")
MODES = ("append", "upsert", "replace")
MAX_SHEET_ROWS = 1_048_576  # Excel's
MAX_SHEETS = 255  # sheets one job may name (Excel itself caps a workbook only by memory)
MAX_URI_CHARS = 4096  # a path's PATH_MAX; an S3 key is at most 1,024 bytes
MAX_SHEET_NAME = 255  # Excel stops at 31; other writers go further
MAX_DEPTH = 32  # nesting of a request body; a real one nests 3 levels
# A codec name as Python spells them (utf-8, latin-1, cp1252, iso8859_15, mac-roman, utf_16_le).
ENCODING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}\Z")
_SHOWN = 60  # characters of a client's value an error message repeats


@dataclass(frozen=True)
class EnqueueRequest:
    """A request that passed every check that can be made before the job runs."""

    customer_id: str
    product_type: str
    blob_uri: str
    options: dict[str, Any]


def check_request(
    body: Any, config: Config, products: ProductRegistry, uploads: UploadStore | None = None
) -> EnqueueRequest:
    """Validate an enqueue body; raise RequestRefused naming the offending field.

    A body names its file by blob_uri or by upload_id (SPEC 19: a finished upload of the same
    customer, found in `uploads`); the job then reads the upload's file and its options carry
    `upload` {id, filename} for the job view."""
    if not isinstance(body, Mapping):
        raise RequestRefused("the request body must be a JSON object", field=None)
    refuse_bad_text(body)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        names = ", ".join(shown(name) for name in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise RequestRefused(f"unknown field(s): {names}", field=_clip(unknown[0]))
    if "upload_id" in body and "blob_uri" in body:
        raise RequestRefused("give blob_uri or upload_id, not both", field="upload_id")
    source = "upload_id" if "upload_id" in body else "blob_uri"
    for name in ("customer_id", "product_type", source):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            also = " (or upload_id)" if name == "blob_uri" else ""
            raise RequestRefused(f"{name}{also} is required and must be a non-empty string", field=name)
    if len(body[source]) > MAX_URI_CHARS:
        raise RequestRefused(f"{source} must be at most {MAX_URI_CHARS:,} characters", field=source)
    customer = body["customer_id"]
    if customer not in config.customers:
        raise RequestRefused(f"unknown customer {shown(customer)}", field="customer_id")
    upload = None
    if source == "upload_id":
        if uploads is None:
            raise RequestRefused("upload_id cannot be used here; give blob_uri", field="upload_id")
        upload = uploads_stage.for_job(uploads, body["upload_id"], customer)
    blob_uri = body["blob_uri"] if upload is None else str(upload.blob_uri)
    product = products.get(body["product_type"])
    options = check_options(body.get("options", {}))
    if options.get("mode", "append") != "append" and product.key is None:
        raise RequestRefused(
            f"product {product.name} has no x-key in its schema, so only mode append is possible",
            field="options.mode",
        )
    try:
        # An unreachable S3 endpoint is no fault of the request: BlobUnavailable goes up (503).
        blob.check(blob.locate(blob_uri, customer, config), config.max_file_bytes)
    except BlobRefused as exc:
        raise RequestRefused(str(exc), field=source) from None
    if "callback_url" in options:
        problem = webhooks.refusal(options["callback_url"], customer, config.customer_settings.get(customer))
        if problem is not None:
            raise RequestRefused(problem, field="options.callback_url")
    if upload is not None:
        options["upload"] = {"id": upload.id, "filename": upload.filename}
    return EnqueueRequest(customer, body["product_type"], blob_uri, options)


def refuse_bad_text(body: Any) -> None:
    """Refuse what no later step can hold: NUL characters (Postgres text and jsonb cannot), lone
    surrogates (not UTF-8: no codec, path or database takes them) and nesting past MAX_DEPTH.

    Walks the body without recursion: a body nested just under the JSON parser's own limit must
    become a 400, not a RecursionError here.
    """
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestRefused(f"the request nests deeper than {MAX_DEPTH} levels", field=where or None)
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                name = str(key)
                path = f"{where}.{_clip(name)}" if where else _clip(name)
                _check_text(name, path, key=True)
                stack.append((item, path, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, where, depth + 1) for item in value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: str, where: str, key: bool = False) -> None:
    """One string of the body: no NUL, no lone surrogate (a JSON "\\ud800" escape)."""
    what = f"the name {where!r}" if key else (where or "the request")
    if "\x00" in text:
        raise RequestRefused(f"{what} contains a NUL character", field=where or None)
    if _SURROGATE.search(text):
        raise RequestRefused(
            f"{what} contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text", field=where or None
        )


def _clip(text: str) -> str:
    """A client's string cut to a length an error message may repeat."""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def shown(value: str) -> str:
    """A client's string as an error message repeats it: quoted, and cut with its length when long."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value):,} characters)"


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
            raise RequestRefused(
                f"unknown option {shown(name)} (known: {', '.join(OPTION_TYPES)})", field=f"options.{_clip(name)}"
            )
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
        raise RequestRefused(f"option mode must be one of {', '.join(MODES)}, got {shown(mode)}", field="options.mode")
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
        _check_encoding(encoding)
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


def _check_encoding(name: str) -> None:
    """Option encoding: a text codec Python has, checked by its shape and the codec tables first.

    codecs.lookup remembers every name it failed to find for the life of the process, so a
    lookup of a client's made-up names would leak memory; only known names are looked up.
    """
    if not ENCODING_NAME.match(name):
        raise RequestRefused(
            "option encoding must be a codec name of at most 40 letters, digits, '-', '_', '.' or ':' "
            "(for example utf-8, utf-16, latin-1, cp1252)",
            field="options.encoding",
        )
    if not _known_codec(name) or not getattr(codecs.lookup(name), "_is_text_encoding", True):
        raise RequestRefused(
            f"option encoding {name!r} is not a text encoding Python knows (for example utf-8, utf-16, latin-1, cp1252)",
            field="options.encoding",
        )


def _codec_names() -> frozenset[str]:
    """Every name the encodings package answers to: its aliases and its modules."""
    modules = {m.name for m in pkgutil.iter_modules(encodings.__path__)}
    return frozenset(encodings.aliases.aliases) | frozenset(modules)


_CODECS = _codec_names()


def _known_codec(name: str) -> bool:
    """Whether name is spelled like a codec of the encodings package (its own normalization)."""
    normal = encodings.normalize_encoding(name.lower())
    return normal in _CODECS or normal.replace(".", "_") in _CODECS


def _check_sheets(sheet: str | list[Any]) -> None:
    """Option sheet: one sheet's name, or a list of distinct names read one after the other."""
    if isinstance(sheet, str):
        if not sheet or len(sheet) > MAX_SHEET_NAME:
            raise RequestRefused(
                f"option sheet must be a sheet name of 1 to {MAX_SHEET_NAME} characters", field="options.sheet"
            )
        return
    if not sheet or len(sheet) > MAX_SHEETS:
        raise RequestRefused(f"option sheet: a list must name 1 to {MAX_SHEETS} sheets", field="options.sheet")
    for name in sheet:
        if not isinstance(name, str) or not name or len(name) > MAX_SHEET_NAME:
            raise RequestRefused(
                f"option sheet: each item of the list must be a sheet name of 1 to {MAX_SHEET_NAME} characters",
                field="options.sheet",
            )
    twice = sorted({name for name in sheet if sheet.count(name) > 1})
    if twice:
        raise RequestRefused(f"option sheet names {shown(twice[0])} twice; a sheet is read once", field="options.sheet")


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
