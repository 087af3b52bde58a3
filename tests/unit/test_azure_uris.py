"""az:// blob URIs (SPEC 18): confined to az://<container>/<prefix>/<customer>/, refused by rule;
the customer's "azure" area and AZURE_STORAGE_CONNECTION_STRING refused at load naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.config import AzureArea, Config, CustomerSettings, azure_credential, load_config
from service.errors import BlobRefused, ConfigError
from service.sources import blob
from service.sources.azure import AzureBlob, parse

ACCOUNT = "http://127.0.0.1:1/devstoreaccount1"
AREA = AzureArea(ACCOUNT, "imports", "landing")
SECRET = "AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleQ=="
CONFIG = Config(
    customers={"acme": "dbname=acme", "globex": "dbname=globex", "initech": "dbname=initech"},
    customer_settings={"acme": CustomerSettings(azure=AREA), "globex": CustomerSettings(azure=AREA)},
    azure_storage_connection_string=SECRET,
)


def test_a_path_under_the_customers_prefix_is_a_blob_of_its_area() -> None:
    found = blob.locate("az://imports/landing/acme/2024/users.csv", "acme", CONFIG)
    assert found == AzureBlob("imports", "landing/acme/2024/users.csv", ACCOUNT)
    assert isinstance(found, AzureBlob) and found.connection_string == SECRET
    assert (found.suffix, found.name, found.uri) == (".csv", "users.csv", "az://imports/landing/acme/2024/users.csv")


def test_the_scheme_is_case_insensitive_like_s3s() -> None:
    assert blob.locate("AZ://imports/landing/acme/u.csv", "acme", CONFIG) == AzureBlob(
        "imports", "landing/acme/u.csv", ACCOUNT
    )


def test_a_prefix_written_with_slashes_in_the_config_means_the_same_area() -> None:
    area = AzureArea(ACCOUNT, "imports", "/landing/")
    assert parse("az://imports/landing/acme/u.csv", "acme", area).path == "landing/acme/u.csv"


def test_the_connection_string_is_never_in_a_blobs_repr() -> None:
    found = blob.locate("az://imports/landing/acme/u.csv", "acme", CONFIG)
    assert "c2VjcmV0" not in repr(found) and "c2VjcmV0" not in repr(CONFIG)


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("az://imports/landing/acme/../globex/users.csv", "'..'"),
        ("az://imports/landing/acme/./users.csv", "'..'"),
        ("az://imports/landing/acme//users.csv", "empty"),
        ("az://imports/landing/globex/users.csv", "outside the Azure area of customer 'acme'"),
        ("az://imports/landing/acmeco/users.csv", "outside the Azure area"),
        ("az://imports/landing/acme/", "empty"),
        ("az://imports/landing/acme", "outside the Azure area"),
        ("az://imports/users.csv", "outside the Azure area"),
        ("az://other/landing/acme/users.csv", "may read only 'imports'"),
        ("az://Imports/landing/acme/users.csv", "not a valid container name"),
        ("az://im_ports/landing/acme/users.csv", "not a valid container name"),
        ("az://im--ports/landing/acme/users.csv", "not a valid container name"),
        ("az://-imports/landing/acme/users.csv", "not a valid container name"),
        ("az://ab/landing/acme/users.csv", "not a valid container name"),
        ("az://" + "c" * 64 + "/landing/acme/users.csv", "not a valid container name"),
        ("az:///landing/acme/users.csv", "not a valid container name"),
        ("az://imports", "with a path"),
        ("az://imports/landing/acme/" + "k" * 1012, "over Azure's limit of 1024"),
        ("az://imports/landing/acme/" + "a/" * 252 + "u.csv", "over Azure's limit of 254"),
        ("az://imports/landing/acme/users.csv?sv=2024&sig=x", "without query"),
        ("az://imports/landing/acme/users.csv#top", "without query"),
        ("az://imports/landing/acme/a\nb.csv", "control characters"),
        ("az://imports/landing/acme/a\x00b.csv", "NUL"),
        ("az://imports/landing/acme/..\\..\\globex\\u.csv", "backslash"),
    ],
)
def test_a_uri_outside_the_area_or_against_azures_rules_is_refused_naming_the_rule(uri: str, says: str) -> None:
    with pytest.raises(BlobRefused) as refused:
        blob.locate(uri, "acme", CONFIG)
    assert says in str(refused.value)


def test_a_name_of_exactly_1024_characters_is_accepted_even_when_longer_in_bytes() -> None:
    path = "landing/acme/" + "é" * (1024 - len("landing/acme/"))
    found = blob.locate(f"az://imports/{path}", "acme", CONFIG)
    assert isinstance(found, AzureBlob) and found.path == path


def test_a_customer_without_an_azure_area_cannot_name_an_az_uri() -> None:
    with pytest.raises(BlobRefused, match="customer 'initech': it has no Azure area"):
        blob.locate("az://imports/landing/initech/users.csv", "initech", CONFIG)


def test_file_uris_still_resolve_for_a_customer_with_an_azure_area(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    target = tmp_path / "acme" / "u.csv"
    target.write_text("a\n")
    assert blob.locate(target.as_uri(), "acme", CONFIG.with_(blob_root=tmp_path)) == target.resolve()


def test_an_unknown_scheme_names_az_among_the_supported_ones() -> None:
    with pytest.raises(BlobRefused, match=r"s3:// or az://"):
        blob.locate("gopher://imports/landing/acme/u.csv", "acme", CONFIG)


def load(tmp_path: Path, area: object, **env: str) -> Config:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"acme": {"dsn": "dbname=acme", "azure": area}}))
    return load_config({"CUSTOMER_MAP_PATH": str(path), **env})


def test_an_azure_area_is_read_from_the_customer_map(tmp_path: Path) -> None:
    config = load(tmp_path, {"account_url": ACCOUNT + "/", "container": "imports", "prefix": "landing"})
    assert config.customer_settings["acme"].azure == AzureArea(ACCOUNT, "imports", "landing")


@pytest.mark.parametrize(
    ("area", "says"),
    [
        ("imports", "azure must be an object with exactly account_url, container, prefix"),
        ({"account_url": ACCOUNT, "container": "imports"}, "azure must be an object with exactly"),
        ({"account_url": ACCOUNT, "container": "imports", "prefix": "p", "key": "k"}, "azure must be an object"),
        ({"account_url": "ftp://h/a", "container": "imports", "prefix": "p"}, "azure.account_url must be"),
        ({"account_url": "https://u:pw@h/a", "container": "imports", "prefix": "p"}, "azure.account_url must be"),
        ({"account_url": "https://h/a?sig=pw", "container": "imports", "prefix": "p"}, "azure.account_url must be"),
        ({"account_url": 7, "container": "imports", "prefix": "p"}, "azure.account_url must be"),
        ({"account_url": ACCOUNT, "container": "Imports", "prefix": "p"}, "azure.container must be"),
        ({"account_url": ACCOUNT, "container": "imports", "prefix": ""}, "azure.prefix must be"),
        ({"account_url": ACCOUNT, "container": "imports", "prefix": "a/../b"}, "azure.prefix must be"),
        ({"account_url": ACCOUNT, "container": "imports", "prefix": None}, "azure.prefix must be"),
    ],
)
def test_a_bad_azure_area_is_refused_at_load_naming_the_key_not_the_value(
    tmp_path: Path, area: object, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, area)
    assert says in str(refused.value) and "customer 'acme'" in str(refused.value)
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    "connection",
    ["just-a-secret-value", "AccountName=devstoreaccount1", "AccountKey=secret-value", "UseDevelopmentStorage=true"],
)
def test_a_connection_string_without_a_key_or_sas_is_refused_at_load_without_its_value(
    tmp_path: Path, connection: str
) -> None:
    area = {"account_url": ACCOUNT, "container": "imports", "prefix": "landing"}
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, area, AZURE_STORAGE_CONNECTION_STRING=connection)
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(refused.value)
    assert "secret-value" not in str(refused.value) and "devstoreaccount1" not in str(refused.value)


def test_a_connection_string_gives_an_account_key_or_a_sas() -> None:
    key = "DefaultEndpointsProtocol=http;AccountName=a1;AccountKey=k==;BlobEndpoint=http://127.0.0.1:1/a1;"
    assert azure_credential(key) == {"account_name": "a1", "account_key": "k=="}
    assert azure_credential("BlobEndpoint=https://a1.blob.core.windows.net;SharedAccessSignature=sv=1&sig=x%3D") == {
        "sas": "sv=1&sig=x%3D"
    }
