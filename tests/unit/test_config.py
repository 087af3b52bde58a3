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
    ],
)
def test_a_bad_customer_map_is_refused_at_start(tmp_path: Path, customers: object, message: str) -> None:
    path = write(tmp_path / "map.json", customers)
    with pytest.raises(ConfigError, match="map.json") as caught:
        load_config({"CUSTOMER_MAP_PATH": str(path)})
    assert message in str(caught.value)


def test_a_bad_token_file_error_never_shows_the_token(folder: Path) -> None:
    tokens = write(folder / "tokens.json", {"s3cret-token": "acme"})
    with pytest.raises(ConfigError) as caught:
        load_config({"CUSTOMER_MAP_PATH": str(folder / "customers.json"), "API_TOKENS_PATH": str(tokens)})
    assert "s3cret" not in str(caught.value) and "entry 1" in str(caught.value)
