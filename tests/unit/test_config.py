"""The one configuration loader: file sections, env overrides, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.config import load_config
from service.errors import ConfigError


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "customers.json", {"acme": "dbname=acme", "beta": "postgresql://u@h:5432/beta"})
    return tmp_path


def test_a_section_is_read_and_its_relative_paths_are_relative_to_the_file(folder: Path) -> None:
    config_file = write(
        folder / "config.json",
        {"prod": {"customer_map_path": "customers.json", "blob_root": "blobs", "max_logged_errors": 7}},
    )
    config = load_config({"CONFIG_PATH": str(config_file), "CONFIG_ENV": "prod"})
    assert config.blob_root == folder / "blobs"
    assert config.max_logged_errors == 7
    assert dict(config.customers) == {"acme": "dbname=acme", "beta": "postgresql://u@h:5432/beta"}


def test_env_variables_override_single_keys_of_the_file(folder: Path) -> None:
    config_file = write(
        folder / "config.json", {"default": {"customer_map_path": "customers.json", "worker_concurrency": 3}}
    )
    config = load_config({"CONFIG_PATH": str(config_file), "WORKER_CONCURRENCY": "5", "APP_DB_DSN": "dbname=app"})
    assert (config.worker_concurrency, config.app_db_dsn) == (5, "dbname=app")


def test_without_a_file_defaults_and_env_are_used(folder: Path) -> None:
    config = load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json")})
    assert (config.rest_addr, config.grpc_addr, config.app_db_dsn) == ("127.0.0.1:8080", "127.0.0.1:9090", None)
    assert config.max_file_bytes == 2 * 1024**3


@pytest.mark.parametrize(
    "document, message",
    [
        ("[1, 2", "malformed JSON"),
        ({"default": {"colour": "red"}}, "unknown setting(s) in section 'default': colour"),
        ({"default": {"chunk_rows": 0}}, "chunk_rows must be positive"),
        ({"default": {"chunk_rows": True}}, "chunk_rows must be a whole number"),
        ({"other": {}}, "unknown config section 'default'"),
        ({"default": []}, "section 'default' must be an object"),
    ],
)
def test_a_bad_config_file_is_one_error_naming_the_file(folder: Path, document: object, message: str) -> None:
    config_file = write(folder / "config.json", document)
    with pytest.raises(ConfigError) as caught:
        load_config({"CONFIG_PATH": str(config_file), "CUSTOMER_MAP_PATH": str(folder / "customers.json")})
    assert message in str(caught.value) and str(config_file) in str(caught.value)


@pytest.mark.parametrize(
    "customers, message",
    [
        ({"acme": "not a dsn at all"}, "not a valid Postgres DSN"),
        ({"acme": ""}, "not a valid Postgres DSN"),
        ({"../evil": "dbname=x"}, "customer id '../evil'"),
        (["dbname=x"], "must be a JSON object"),
        ({"acme": {"webhook_secret": "s3cr3t-value"}}, "the DSN of customer 'acme'"),
        ({"acme": {"dsn": "dbname=a", "colour": 1}}, "customer 'acme': unknown key(s) colour"),
        ({"acme": {"dsn": "dbname=a", "webhook_prefixes": "https://x"}}, "webhook_prefixes must be a list"),
        ({"acme": {"dsn": "dbname=a", "webhook_prefixes": ["ftp://x/"]}}, "webhook_prefixes must be a list"),
        ({"acme": {"dsn": "dbname=a", "webhook_prefixes": ["https://u:p@x/"]}}, "without credentials"),
        ({"acme": {"dsn": "dbname=a", "webhook_secret": ""}}, "webhook_secret must be a non-empty string"),
        ({"acme": {"dsn": "dbname=a", "s3": {"bucket": "b"}}}, "s3.bucket and s3.prefix must be non-empty"),
        ({"acme": {"dsn": "dbname=a", "s3": {"bucket": "b", "prefix": "p", "key": 1}}}, "s3 must be an object"),
    ],
)
def test_a_bad_customer_map_is_refused_at_start(tmp_path: Path, customers: object, message: str) -> None:
    path = write(tmp_path / "map.json", customers)
    with pytest.raises(ConfigError, match="map.json") as caught:
        load_config({"CUSTOMER_MAP_PATH": str(path)})
    assert message in str(caught.value)


def test_the_customer_map_mixes_dsns_and_objects_of_settings(tmp_path: Path) -> None:
    document = {
        "acme": "dbname=acme",
        "beta": {
            "dsn": "dbname=beta password=hunter2",
            "webhook_prefixes": ["https://hooks.beta.example/imports/", "http://127.0.0.1:8000"],
            "webhook_secret": "s3cr3t",
            "s3": {"bucket": "imports", "prefix": "customers", "endpoint_url": "http://127.0.0.1:9000"},
        },
    }
    config = load_config({"CUSTOMER_MAP_PATH": str(write(tmp_path / "map.json", document))})
    assert config.customers == {"acme": "dbname=acme", "beta": "dbname=beta password=hunter2"}
    beta = config.customer_settings["beta"]
    assert beta.webhook_prefixes == ("https://hooks.beta.example/imports/", "http://127.0.0.1:8000")
    assert beta.webhook_secret == "s3cr3t" and "s3cr3t" not in repr(beta)
    assert beta.s3 is not None and (beta.s3.bucket, beta.s3.prefix, beta.s3.region) == ("imports", "customers", None)
    assert "acme" not in config.customer_settings


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LOG_FORMAT": "xml"}, "log_format must be text or json, got 'xml'"),
        ({"WORKER_METRICS_ADDR": "9191"}, "worker_metrics_addr must be host:port or off"),
        ({"WORKER_METRICS_ADDR": "h:99999"}, "worker_metrics_addr must be host:port or off"),
        ({"AUTH": "maybe"}, "auth must be on or off, got 'maybe'"),
    ],
)
def test_bad_operating_settings_are_refused_naming_them(folder: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="environment") as caught:
        load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json"), **env})
    assert message in str(caught.value)
    config = load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json"), "METRICS_TOKEN": "m-token"})
    assert (config.log_format, config.worker_metrics_addr, config.metrics_token) == (
        "text",
        "127.0.0.1:9191",
        "m-token",
    )
    assert "m-token" not in repr(config)


def test_a_bad_token_file_error_never_shows_the_token(folder: Path) -> None:
    tokens = write(folder / "tokens.json", {"s3cret-token": "acme"})
    with pytest.raises(ConfigError) as caught:
        load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json"), "API_TOKENS_PATH": str(tokens)})
    assert "s3cret" not in str(caught.value) and "entry 1" in str(caught.value)


def test_a_hashed_token_key_must_be_sha256_and_64_hex_digits(folder: Path) -> None:
    good = "sha256:" + "ab" * 32
    tokens = write(folder / "tokens.json", {"plain": ["acme"], good: ["*"]})
    config = load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json"), "API_TOKENS_PATH": str(tokens)})
    assert config.tokens[good] == ("*",) and config.auth == "on"
    write(folder / "tokens.json", {"plain": ["acme"], "sha256:abc": ["*"]})
    with pytest.raises(ConfigError, match="entry 2 starts with sha256: but is not followed by 64 hex digits"):
        load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json"), "API_TOKENS_PATH": str(tokens)})


def test_allow_private_hosts_must_be_a_boolean(tmp_path: Path) -> None:
    document = {"acme": {"dsn": "dbname=acme", "allow_private_hosts": "yes"}}
    with pytest.raises(ConfigError, match="customer 'acme': allow_private_hosts must be true or false"):
        load_config({"CUSTOMER_MAP_PATH": str(write(tmp_path / "map.json", document))})
    document = {"acme": {"dsn": "dbname=acme", "allow_private_hosts": True}}
    config = load_config({"CUSTOMER_MAP_PATH": str(write(tmp_path / "map.json", document))})
    assert config.customer_settings["acme"].allow_private_hosts is True


def test_uploads_names_an_area_the_customer_has(tmp_path: Path) -> None:
    area = {"bucket": "b", "prefix": "p"}
    document = {"acme": {"dsn": "dbname=acme", "s3": area, "uploads": "s3"}, "globex": {"dsn": "dbname=globex"}}
    config = load_config({"CUSTOMER_MAP_PATH": str(write(tmp_path / "map.json", document))})
    assert config.customer_settings["acme"].uploads == "s3"
    assert config.customer_settings["globex"].uploads == "blob_root"  # the default
    for uploads, said in (
        ("gcs", "uploads names gcs, but the customer has no gcs area"),
        ("ftp", "uploads must be one of"),
    ):
        document = {"acme": {"dsn": "dbname=acme", "s3": area, "uploads": uploads}}
        with pytest.raises(ConfigError, match=f"customer 'acme': {said}"):
            load_config({"CUSTOMER_MAP_PATH": str(write(tmp_path / "map.json", document))})


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_float_setting_must_be_a_finite_positive_number(value: str) -> None:
    with pytest.raises(ConfigError, match="UPLOAD_EXPIRY_HOURS must be positive"):
        load_config({"UPLOAD_EXPIRY_HOURS": value})
    assert load_config({"UPLOAD_EXPIRY_HOURS": "0.5"}).upload_expiry_hours == 0.5


def test_without_an_app_dsn_and_without_pgserver_the_error_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from service.config import Config
    from service.storage.db import app_dsn

    monkeypatch.setitem(sys.modules, "pgserver", None)  # import pgserver raises ImportError
    with pytest.raises(ConfigError, match=r"no app_db_dsn is configured \(APP_DB_DSN\).*pgserver"):
        app_dsn(Config(data_dir=tmp_path))
    assert not (tmp_path / "pg").exists()
