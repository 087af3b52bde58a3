"""The one configuration loader: a config.json section plus env overrides -> a frozen Config.

Every setting is declared once in SETTINGS; no other module reads os.environ.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg2.extensions

from service.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


@dataclass(frozen=True)
class Setting:
    """One configuration key: its config-file name, its env variable, its type and default."""

    key: str
    env: str
    kind: str  # "str" | "int" | "float" | "path"
    default: Any


GiB = 1024**3
MiB = 1024**2

SETTINGS: tuple[Setting, ...] = (
    Setting("app_db_dsn", "APP_DB_DSN", "str", None),
    Setting("rest_addr", "REST_ADDR", "str", "127.0.0.1:8080"),
    Setting("grpc_addr", "GRPC_ADDR", "str", "127.0.0.1:9090"),
    Setting("worker_concurrency", "WORKER_CONCURRENCY", "int", 8),
    Setting("customer_map_path", "CUSTOMER_MAP_PATH", "path", "customer_map.json"),
    Setting("blob_root", "BLOB_ROOT", "path", "sample"),
    Setting("api_tokens_path", "API_TOKENS_PATH", "path", None),
    Setting("schemas_dir", "SCHEMAS_DIR", "path", "schemas"),
    Setting("data_dir", "DATA_DIR", "path", ".data"),
    Setting("max_logged_errors", "MAX_LOGGED_ERRORS", "int", 1000),
    Setting("customer_db_retry_seconds", "CUSTOMER_DB_RETRY_SECONDS", "float", 60.0),
    Setting("chunk_rows", "CHUNK_ROWS", "int", 20_000),
    Setting("max_file_bytes", "MAX_FILE_BYTES", "int", 2 * GiB),
    Setting("max_field_bytes", "MAX_FIELD_BYTES", "int", 1 * MiB),
    Setting("max_record_bytes", "MAX_RECORD_BYTES", "int", 10 * MiB),
    Setting("max_xlsx_bytes", "MAX_XLSX_BYTES", "int", 1 * GiB),
    Setting("max_columns", "MAX_COLUMNS", "int", 16_384),
    Setting("max_text_bytes", "MAX_TEXT_BYTES", "int", 4 * GiB),
    Setting("max_compression_ratio", "MAX_COMPRESSION_RATIO", "int", 200),
    Setting("auth", "AUTH", "str", "on"),
    Setting("log_level", "LOG_LEVEL", "str", "INFO"),
    Setting("undo_retention_days", "UNDO_RETENTION_DAYS", "int", 30),
    Setting("upload_expiry_hours", "UPLOAD_EXPIRY_HOURS", "float", 24.0),
    Setting("chunks_in_flight", "CHUNKS_IN_FLIGHT", "int", 8),
    Setting("log_format", "LOG_FORMAT", "str", "text"),
    Setting("metrics_token", "METRICS_TOKEN", "str", None),
    Setting("worker_metrics_addr", "WORKER_METRICS_ADDR", "str", "127.0.0.1:9191"),
    Setting("webhook_backoff_seconds", "WEBHOOK_BACKOFF_SECONDS", "float", 30.0),
    Setting("webhook_give_up_seconds", "WEBHOOK_GIVE_UP_SECONDS", "float", 86_400.0),
    Setting("webhook_concurrency", "WEBHOOK_CONCURRENCY", "int", 4),
    Setting("azure_storage_connection_string", "AZURE_STORAGE_CONNECTION_STRING", "str", None),
    Setting("storage_emulator_host", "STORAGE_EMULATOR_HOST", "str", None),
)
LOG_FORMATS = ("text", "json")
AUTH_MODES = ("on", "off")
HASHED_PREFIX = "sha256:"  # a token file key that is the SHA-256 hex digest of the token (SPEC 4)
HASHED_TOKEN = re.compile(r"sha256:[0-9a-fA-F]{64}\Z")
URL_PREFIX = re.compile(r"https?://[^/?#@\s]+(/[^?#\s]*)?\Z", re.IGNORECASE)
# Azure's rules for a container name: 3-63 lowercase letters, digits and hyphens, a letter or
# digit first and last, no two hyphens in a row.
AZURE_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
# GCS's rules for a bucket name: 3-63 lowercase letters, digits, '-' and '_' (up to 222 with dots,
# 63 between dots), a letter or digit at each end of each part, not an IP, no "goog" prefix or "google".
_GCS_PART = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
GCS_BUCKET = re.compile(rf"(?=.{{3,222}}\Z)(?!goog)(?!.*google)(?!\d+\.\d+\.\d+\.\d+\Z){_GCS_PART}(?:\.{_GCS_PART})*\Z")


@dataclass(frozen=True)
class S3Area:
    """A customer's area of S3 (SPEC 17): s3://bucket/prefix/<customer>/."""

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class AzureArea:
    """A customer's area of Azure Blob Storage (SPEC 18): az://container/prefix/<customer>/ of the
    storage account at account_url (no credentials in it: they come from the environment)."""

    account_url: str
    container: str
    prefix: str


@dataclass(frozen=True)
class GcsArea:
    """A customer's area of Google Cloud Storage (SPEC 18): gs://bucket/prefix/<customer>/, at
    endpoint_url when given (no credentials in it: they come from the Google chain)."""

    bucket: str
    prefix: str
    endpoint_url: str | None = None


@dataclass(frozen=True)
class CustomerSettings:
    """A customer's settings besides its DSN (the object form of customer_map.json, SPEC 4)."""

    webhook_prefixes: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)  # a secret: never printed
    s3: S3Area | None = None
    azure: AzureArea | None = None
    gcs: GcsArea | None = None
    # SPEC 16: callbacks and https:// sources may reach loopback/private/link-local hosts.
    allow_private_hosts: bool = False
    # SPEC 18: the http(s):// prefixes a blob_uri may start with (matched as webhook_prefixes are).
    url_prefixes: tuple[str, ...] = ()
    # SPEC 19: where uploads go: "blob_root" (the default), or the customer's "s3", "azure" or "gcs" area.
    uploads: str = "blob_root"


@dataclass(frozen=True)
class Config:
    """Everything a process needs to know, read once at start and passed down."""

    app_db_dsn: str | None = None
    rest_addr: str = "127.0.0.1:8080"
    grpc_addr: str = "127.0.0.1:9090"
    worker_concurrency: int = 8
    customer_map_path: Path = PROJECT_ROOT / "customer_map.json"
    blob_root: Path = PROJECT_ROOT / "sample"
    api_tokens_path: Path | None = None
    schemas_dir: Path = PROJECT_ROOT / "schemas"
    data_dir: Path = PROJECT_ROOT / ".data"
    max_logged_errors: int = 1000
    customer_db_retry_seconds: float = 60.0
    chunk_rows: int = 20_000
    max_file_bytes: int = 2 * GiB
    max_field_bytes: int = 1 * MiB
    max_record_bytes: int = 10 * MiB
    max_xlsx_bytes: int = 1 * GiB
    # Columns of a header, or distinct keys of a kv file (SPEC 7).
    max_columns: int = 16_384
    # The whole job's text as the records read it (shared strings counted at every use, SPEC 7).
    max_text_bytes: int = 4 * GiB
    # Decompressed bytes per compressed byte a compressed file (or ZIP member) may reach (SPEC 18).
    max_compression_ratio: int = 200
    # "on": every call needs a configured token (none configured: every call is refused);
    # "off": no tokens at all, every caller is the operator (logged as a warning at start).
    auth: str = "on"
    log_level: str = "INFO"
    undo_retention_days: int = 30
    # An upload not finished this long after it began is deleted, bytes and all (SPEC 19).
    upload_expiry_hours: float = 24.0
    # Chunk messages one customer may have queued or running at once (fair turns, SPEC 15).
    chunks_in_flight: int = 8
    log_format: str = "text"  # "text" | "json" (one object per line)
    metrics_token: str | None = field(default=None, repr=False)  # a secret: never printed
    # host:port of the workers' Prometheus exposition server (Dramatiq's metrics); "off": none.
    worker_metrics_addr: str = "127.0.0.1:9191"
    # Webhooks (SPEC 16): the wait after the first failed attempt (doubling, at most an hour),
    # and how long after the first attempt a delivery is given up.
    webhook_backoff_seconds: float = 30.0
    webhook_give_up_seconds: float = 86_400.0
    # Threads per worker process that POST webhooks, apart from the threads that run imports.
    webhook_concurrency: int = 4
    # The key (AccountName + AccountKey) or SAS (SharedAccessSignature) for az:// blobs; a secret.
    azure_storage_connection_string: str | None = field(default=None, repr=False)
    # A GCS emulator (http://host:port) for gs:// blobs: read anonymously, no Google credentials.
    storage_emulator_host: str | None = None
    customers: Mapping[str, str] = field(default_factory=dict)  # customer id -> DSN
    customer_settings: Mapping[str, CustomerSettings] = field(default_factory=dict)
    tokens: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Config:
        """Return a copy with some settings changed (tests build configs this way)."""
        return replace(self, **changes)


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read CONFIG_PATH/CONFIG_ENV and env overrides; raise ConfigError naming file and problem."""
    env = os.environ if environ is None else environ
    # Each value remembers the folder its relative paths are relative to.
    values: dict[str, tuple[Any, Path, str]] = {s.key: (s.default, PROJECT_ROOT, "default") for s in SETTINGS}
    config_path = env.get("CONFIG_PATH")
    if config_path:
        path = Path(config_path).resolve()
        section = env.get("CONFIG_ENV", "default")
        values.update({k: (v, path.parent, str(path)) for k, v in _read_section(path, section).items()})
    for setting in SETTINGS:
        if env.get(setting.env):
            values[setting.key] = (env[setting.env], Path.cwd(), "environment")
    converted = {s.key: _convert(s, *values[s.key]) for s in SETTINGS}
    converted["log_level"] = converted["log_level"].upper()
    if converted["log_level"] not in logging.getLevelNamesMapping():
        raise ConfigError(f"{values['log_level'][2]}: log_level {converted['log_level']!r} is not a logging level")
    if converted["log_format"] not in LOG_FORMATS:
        raise ConfigError(
            f"{values['log_format'][2]}: log_format must be text or json, got {converted['log_format']!r}"
        )
    if converted["auth"] not in AUTH_MODES:
        raise ConfigError(f"{values['auth'][2]}: auth must be on or off, got {converted['auth']!r}")
    addr = converted["worker_metrics_addr"]
    if addr != "off" and not _is_addr(addr):
        raise ConfigError(
            f"{values['worker_metrics_addr'][2]}: worker_metrics_addr must be host:port or off, got {addr!r}"
        )
    connection = converted["azure_storage_connection_string"]
    if connection is not None and azure_credential(connection) is None:
        # Never the value: it holds the account key.
        raise ConfigError(
            f"{values['azure_storage_connection_string'][2]}: azure_storage_connection_string (AZURE_STORAGE_"
            "CONNECTION_STRING) must be Key=Value pairs separated by ';' with AccountName and AccountKey, "
            "or SharedAccessSignature"
        )
    emulator = converted["storage_emulator_host"]
    if emulator is not None:
        converted["storage_emulator_host"] = emulator if "://" in emulator else f"http://{emulator}"
        if not URL_PREFIX.match(converted["storage_emulator_host"]):
            raise ConfigError(
                f"{values['storage_emulator_host'][2]}: storage_emulator_host (STORAGE_EMULATOR_HOST) must be "
                "host:port or http(s)://host:port without credentials"
            )
    customers, settings = load_customers(converted["customer_map_path"])
    tokens = load_tokens(converted["api_tokens_path"])
    return Config(**converted, customers=customers, customer_settings=settings, tokens=tokens)


def _is_addr(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _read_section(path: Path, section: str) -> dict[str, Any]:
    """Load one section of a JSON config file."""
    document = _read_json(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be an object of sections")
    if section not in document:
        known = ", ".join(sorted(document)) or "none"
        raise ConfigError(f"{path}: unknown config section {section!r} (sections: {known})")
    body = document[section]
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: section {section!r} must be an object")
    known_keys = {s.key for s in SETTINGS}
    unknown = sorted(set(body) - known_keys)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) in section {section!r}: {', '.join(unknown)}")
    return dict(body)


def _read_json(path: Path) -> Any:
    """Parse a JSON file, turning every failure into a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the file is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


_CONVERTERS: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "str": str}
_KIND_NAMES = {"int": "a whole number", "float": "a number", "str": "a string"}


def _convert(setting: Setting, value: Any, base: Path, origin: str) -> Any:
    """Convert one raw value to the setting's type, resolving relative paths."""
    if value is None:
        return None
    where = f"{origin}: setting {setting.key}" if origin != "environment" else f"environment: {setting.env}"
    if setting.kind == "path":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path, got {value!r}")
        return (base / value).resolve()
    try:
        if setting.kind in ("int", "float") and isinstance(value, bool):
            raise ValueError
        converted = _CONVERTERS[setting.kind](value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {_KIND_NAMES[setting.kind]}, got {value!r}") from None
    if setting.kind in ("int", "float") and not 0 < converted < math.inf:  # NaN, inf: neither
        raise ConfigError(f"{where} must be positive, got {value!r}")
    return converted


def load_customer_map(path: Path) -> dict[str, str]:
    """Read customer id -> DSN (see load_customers)."""
    return load_customers(path)[0]


CUSTOMER_KEYS = (
    "dsn",
    "webhook_prefixes",
    "webhook_secret",
    "s3",
    "azure",
    "gcs",
    "allow_private_hosts",
    "url_prefixes",
    "uploads",
)
S3_KEYS = ("bucket", "prefix", "endpoint_url", "region")
AZURE_KEYS = ("account_url", "container", "prefix")
GCS_KEYS = ("bucket", "prefix", "endpoint_url")


def load_customers(path: Path) -> tuple[dict[str, str], dict[str, CustomerSettings]]:
    """Read customer id -> DSN, or -> {"dsn", "webhook_prefixes"?, "webhook_secret"?, "s3"?,
    "azure"?, "gcs"?, "allow_private_hosts"?, "url_prefixes"?, "uploads"?} (both forms may be mixed): (DSNs, settings of the customers given as objects). Refuses ids
    that are not simple names, DSNs that do not parse and settings of the wrong shape, naming
    the customer and key (never a value: DSNs and secrets hold passwords)."""
    document = _read_json(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a JSON object mapping customer id to DSN")
    customers: dict[str, str] = {}
    settings: dict[str, CustomerSettings] = {}
    for customer, entry in document.items():
        if not CUSTOMER_ID.match(customer):
            raise ConfigError(f"{path}: customer id {customer!r} must match {CUSTOMER_ID.pattern}")
        where = f"{path}: customer {customer!r}"
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - set(CUSTOMER_KEYS))
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(CUSTOMER_KEYS)})")
            dsn = entry.get("dsn")
            settings[customer] = _customer_settings(where, entry)
        else:
            dsn = entry
        if not isinstance(dsn, str) or not is_dsn(dsn):
            raise ConfigError(f"{path}: the DSN of customer {customer!r} is not a valid Postgres DSN")
        customers[customer] = dsn
    return customers, settings


def _prefixes(where: str, entry: dict[str, Any], key: str) -> tuple[str, ...]:
    """A customer's list of URL prefixes (webhook_prefixes, url_prefixes), refused naming the key."""
    prefixes = entry.get(key, [])
    if not isinstance(prefixes, list) or not all(isinstance(p, str) and URL_PREFIX.match(p) for p in prefixes):
        raise ConfigError(f"{where}: {key} must be a list of http(s)://host[/path] prefixes without credentials")
    return tuple(prefixes)


def _customer_settings(where: str, entry: dict[str, Any]) -> CustomerSettings:
    prefixes = _prefixes(where, entry, "webhook_prefixes")
    secret = entry.get("webhook_secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(f"{where}: webhook_secret must be a non-empty string")
    area = entry.get("s3")
    s3 = None
    if area is not None:
        if not isinstance(area, dict) or set(area) - set(S3_KEYS):
            raise ConfigError(f"{where}: s3 must be an object with bucket, prefix, endpoint_url?, region?")
        if not all(isinstance(area.get(key), str) and area[key] for key in ("bucket", "prefix")):
            raise ConfigError(f"{where}: s3.bucket and s3.prefix must be non-empty strings")
        for key in ("endpoint_url", "region"):
            if area.get(key) is not None and not isinstance(area[key], str):
                raise ConfigError(f"{where}: s3.{key} must be a string")
        s3 = S3Area(area["bucket"], area["prefix"], area.get("endpoint_url"), area.get("region"))
    azure = _azure_area(where, entry.get("azure"))
    allow_private = entry.get("allow_private_hosts", False)
    if not isinstance(allow_private, bool):
        raise ConfigError(f"{where}: allow_private_hosts must be true or false")
    gcs = _gcs_area(where, entry.get("gcs"))
    uploads = entry.get("uploads", "blob_root")
    areas = {"blob_root": True, "s3": s3 is not None, "azure": azure is not None, "gcs": gcs is not None}
    if uploads not in areas:
        raise ConfigError(f"{where}: uploads must be one of {', '.join(areas)}")
    if not areas[uploads]:
        raise ConfigError(f"{where}: uploads names {uploads}, but the customer has no {uploads} area")
    return CustomerSettings(
        prefixes, secret, s3, azure, gcs, allow_private, _prefixes(where, entry, "url_prefixes"), uploads
    )


def _azure_area(where: str, area: Any) -> AzureArea | None:
    """The customer's "azure" object, refused naming the key that is wrong (never a value)."""
    if area is None:
        return None
    if not isinstance(area, dict) or set(area) != set(AZURE_KEYS):
        raise ConfigError(f"{where}: azure must be an object with exactly account_url, container, prefix")
    url = area["account_url"]
    if not isinstance(url, str) or not URL_PREFIX.match(url):
        raise ConfigError(
            f"{where}: azure.account_url must be http(s)://host[/path] without credentials, query or fragment "
            "(the key or SAS goes in AZURE_STORAGE_CONNECTION_STRING)"
        )
    container = area["container"]
    if not isinstance(container, str) or not AZURE_CONTAINER.match(container):
        raise ConfigError(
            f"{where}: azure.container must be a container name (3-63 lowercase letters, digits, single hyphens)"
        )
    prefix = area["prefix"]
    segments = prefix.strip("/").split("/") if isinstance(prefix, str) else [""]
    if any(segment in ("", ".", "..") for segment in segments):
        raise ConfigError(f"{where}: azure.prefix must be a non-empty path without empty, '.' or '..' segments")
    return AzureArea(url.rstrip("/"), container, prefix)


def _gcs_area(where: str, area: Any) -> GcsArea | None:
    """The customer's "gcs" object, refused naming the key that is wrong (never a value)."""
    if area is None:
        return None
    if not isinstance(area, dict) or not {"bucket", "prefix"} <= set(area) <= set(GCS_KEYS):
        raise ConfigError(f"{where}: gcs must be an object with bucket, prefix, endpoint_url?")
    if not isinstance(area["bucket"], str) or not GCS_BUCKET.match(area["bucket"]):
        raise ConfigError(f"{where}: gcs.bucket must be a bucket name (3-63 lowercase letters, digits, -, _, .)")
    prefix = area["prefix"]
    if any(part in ("", ".", "..") for part in (prefix.strip("/").split("/") if isinstance(prefix, str) else [""])):
        raise ConfigError(f"{where}: gcs.prefix must be a non-empty path without empty, '.' or '..' segments")
    url = area.get("endpoint_url")
    if url is not None and (not isinstance(url, str) or not URL_PREFIX.match(url)):
        raise ConfigError(f"{where}: gcs.endpoint_url must be http(s)://host[/path] without credentials or query")
    return GcsArea(area["bucket"], prefix, url.rstrip("/") if url else None)


def azure_credential(connection_string: str) -> dict[str, str] | None:
    """The credential in an Azure connection string: {"account_name", "account_key"} or
    {"sas"}; None when it holds neither (or is not Key=Value;... at all)."""
    pairs: dict[str, str] = {}
    for part in connection_string.strip().split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            return None
        pairs[name.strip()] = value.strip()
    if pairs.get("AccountName") and pairs.get("AccountKey"):
        return {"account_name": pairs["AccountName"], "account_key": pairs["AccountKey"]}
    if pairs.get("SharedAccessSignature"):
        return {"sas": pairs["SharedAccessSignature"]}
    return None


def is_dsn(text: str) -> bool:
    """Whether libpq can parse text as a connection string (key=value or URI)."""
    if not text.strip():
        return False
    try:
        psycopg2.extensions.parse_dsn(text)
    except psycopg2.ProgrammingError:
        return False
    return True


def load_tokens(path: Path | None) -> dict[str, tuple[str, ...]]:
    """Read token (or sha256:<hex digest of it>) -> customer ids it may act for ("*" = all); no file
    means no tokens, and then every call is refused unless auth is off (see Api.authenticate)."""
    if path is None:
        return {}
    document = _read_json(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a JSON object mapping token to a list of customer ids")
    tokens: dict[str, tuple[str, ...]] = {}
    for index, (token, customers) in enumerate(document.items(), 1):
        ok = isinstance(customers, list) and all(isinstance(c, str) for c in customers)
        if not token or not ok:
            # The token itself is a secret: name it by position only.
            raise ConfigError(f"{path}: entry {index} must map a non-empty token to a list of customer ids")
        if token.startswith(HASHED_PREFIX) and not HASHED_TOKEN.match(token):
            raise ConfigError(f"{path}: entry {index} starts with sha256: but is not followed by 64 hex digits")
        tokens[token] = tuple(customers)
    return tokens
