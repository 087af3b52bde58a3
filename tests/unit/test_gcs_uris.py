"""gs:// blob URIs (SPEC 18): confined to gs://<bucket>/<prefix>/<customer>/, refused by rule;
the customer's "gcs" area and STORAGE_EMULATOR_HOST refused at load naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.config import Config, CustomerSettings, GcsArea, load_config
from service.errors import BlobRefused, ConfigError
from service.sources import blob
from service.sources.gcs import GcsObject, endpoint, parse

EMULATOR = "http://127.0.0.1:1"
AREA = GcsArea("imports", "landing")
CONFIG = Config(
    customers={"acme": "dbname=acme", "globex": "dbname=globex", "initech": "dbname=initech"},
    customer_settings={"acme": CustomerSettings(gcs=AREA), "globex": CustomerSettings(gcs=AREA)},
)


def test_a_path_under_the_customers_prefix_is_an_object_of_its_area() -> None:
    found = blob.locate("gs://imports/landing/acme/2024/users.csv", "acme", CONFIG)
    assert found == GcsObject("imports", "landing/acme/2024/users.csv")
    assert isinstance(found, GcsObject) and endpoint(found) == "https://storage.googleapis.com"
    assert (found.suffix, found.name, found.uri) == (".csv", "users.csv", "gs://imports/landing/acme/2024/users.csv")


def test_the_scheme_is_case_insensitive_like_s3s() -> None:
    assert blob.locate("GS://imports/landing/acme/u.csv", "acme", CONFIG) == GcsObject("imports", "landing/acme/u.csv")


def test_an_emulator_is_read_anonymously_and_an_areas_endpoint_url_comes_first() -> None:
    found = blob.locate("gs://imports/landing/acme/u.csv", "acme", CONFIG.with_(storage_emulator_host=EMULATOR))
    assert isinstance(found, GcsObject) and (found.endpoint_url, found.emulator) == (EMULATOR, True)
    own = parse("gs://imports/landing/acme/u.csv", "acme", GcsArea("imports", "landing", "https://gcs.example:8443"))
    assert (own.endpoint_url, own.emulator, endpoint(own)) == ("https://gcs.example:8443", False, own.endpoint_url)


def test_a_prefix_written_with_slashes_in_the_config_means_the_same_area() -> None:
    assert parse("gs://imports/landing/acme/u.csv", "acme", GcsArea("imports", "/landing/")).uri.endswith("acme/u.csv")


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://imports/landing/acme/../globex/users.csv", "'..'"),
        ("gs://imports/landing/acme/./users.csv", "'..'"),
        ("gs://imports/landing/acme//users.csv", "empty"),
        ("gs://imports/landing/globex/users.csv", "outside the GCS area of customer 'acme'"),
        ("gs://imports/landing/acmeco/users.csv", "outside the GCS area"),
        ("gs://imports/landing/acme/", "empty"),
        ("gs://imports/landing/acme", "outside the GCS area"),
        ("gs://imports/users.csv", "outside the GCS area"),
        ("gs://other/landing/acme/users.csv", "may read only 'imports'"),
        ("gs://Imports/landing/acme/users.csv", "not a valid bucket name"),
        ("gs://-imports/landing/acme/users.csv", "not a valid bucket name"),
        ("gs://ab/landing/acme/users.csv", "not a valid bucket name"),
        ("gs://" + "b" * 64 + "/landing/acme/users.csv", "not a valid bucket name"),
        ("gs://google-imports/landing/acme/users.csv", "not a valid bucket name"),
        ("gs://goog-imports/landing/acme/users.csv", "not a valid bucket name"),
        ("gs://192.168.1.1/landing/acme/users.csv", "not a valid bucket name"),
        ("gs:///landing/acme/users.csv", "not a valid bucket name"),
        ("gs://imports", "with a path"),
        ("gs://imports/landing/acme/" + "é" * 506, "over GCS's limit of 1024"),
        ("gs://imports/landing/acme/users.csv?generation=1", "without query"),
        ("gs://imports/landing/acme/users.csv#top", "without query"),
        ("gs://imports/landing/acme/a\nb.csv", "control characters"),
        ("gs://imports/landing/acme/a\x00b.csv", "NUL"),
    ],
)
def test_a_uri_outside_the_area_or_against_gcss_rules_is_refused_naming_the_rule(uri: str, says: str) -> None:
    with pytest.raises(BlobRefused) as refused:
        blob.locate(uri, "acme", CONFIG)
    assert says in str(refused.value)


def test_dotted_and_underscored_bucket_names_are_valid() -> None:
    area = GcsArea("imports_2024.example.com", "landing")
    assert parse("gs://imports_2024.example.com/landing/acme/u.csv", "acme", area).bucket == area.bucket


def test_a_customer_without_a_gcs_area_cannot_name_a_gs_uri() -> None:
    with pytest.raises(BlobRefused, match="customer 'initech': it has no GCS area"):
        blob.locate("gs://imports/landing/initech/users.csv", "initech", CONFIG)


def test_an_unknown_scheme_names_gs_among_the_supported_ones() -> None:
    with pytest.raises(BlobRefused, match=r"gs://, s3:// or az://"):
        blob.locate("gopher://imports/landing/acme/u.csv", "acme", CONFIG)


def load(tmp_path: Path, area: object, **env: str) -> Config:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"acme": {"dsn": "dbname=acme", "gcs": area}}))
    return load_config({"CUSTOMER_MAP_PATH": str(path), **env})


def test_a_gcs_area_is_read_from_the_customer_map(tmp_path: Path) -> None:
    config = load(tmp_path, {"bucket": "imports", "prefix": "landing", "endpoint_url": "http://127.0.0.1:9/"})
    assert config.customer_settings["acme"].gcs == GcsArea("imports", "landing", "http://127.0.0.1:9")
    assert load(tmp_path, {"bucket": "imports", "prefix": "p"}).customer_settings["acme"].gcs == GcsArea("imports", "p")


def test_storage_emulator_host_is_read_as_a_url(tmp_path: Path) -> None:
    area = {"bucket": "imports", "prefix": "landing"}
    assert load(tmp_path, area, STORAGE_EMULATOR_HOST="127.0.0.1:4443").storage_emulator_host == "http://127.0.0.1:4443"
    assert load(tmp_path, area).storage_emulator_host is None
    with pytest.raises(ConfigError, match="STORAGE_EMULATOR_HOST") as refused:
        load(tmp_path, area, STORAGE_EMULATOR_HOST="http://u:pw@127.0.0.1:4443")
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("area", "says"),
    [
        ("imports", "gcs must be an object with bucket, prefix, endpoint_url?"),
        ({"bucket": "imports"}, "gcs must be an object"),
        ({"bucket": "imports", "prefix": "p", "key": "pw"}, "gcs must be an object"),
        ({"bucket": "Imports", "prefix": "p"}, "gcs.bucket must be"),
        ({"bucket": 7, "prefix": "p"}, "gcs.bucket must be"),
        ({"bucket": "imports", "prefix": ""}, "gcs.prefix must be"),
        ({"bucket": "imports", "prefix": "a/../b"}, "gcs.prefix must be"),
        ({"bucket": "imports", "prefix": None}, "gcs.prefix must be"),
        ({"bucket": "imports", "prefix": "p", "endpoint_url": "https://u:pw@h"}, "gcs.endpoint_url must be"),
        ({"bucket": "imports", "prefix": "p", "endpoint_url": "https://h/?key=pw"}, "gcs.endpoint_url must be"),
        ({"bucket": "imports", "prefix": "p", "endpoint_url": "ftp://h"}, "gcs.endpoint_url must be"),
    ],
)
def test_a_bad_gcs_area_is_refused_at_load_naming_the_key_not_the_value(
    tmp_path: Path, area: object, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, area)
    assert says in str(refused.value) and "customer 'acme'" in str(refused.value)
    assert "pw" not in str(refused.value)
