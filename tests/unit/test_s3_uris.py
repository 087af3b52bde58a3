"""s3:// blob URIs (SPEC 17): confined to s3://<bucket>/<prefix>/<customer>/, refused by rule."""

from __future__ import annotations

import pytest

from service.config import Config, CustomerSettings, S3Area
from service.errors import BlobRefused
from service.sources import blob
from service.sources.s3 import S3Object, parse

AREA = S3Area("imports-bucket", "landing", "http://127.0.0.1:1", "us-east-1")
CONFIG = Config(
    customers={"acme": "dbname=acme", "globex": "dbname=globex", "initech": "dbname=initech"},
    customer_settings={"acme": CustomerSettings(s3=AREA), "globex": CustomerSettings(s3=AREA)},
)


def test_a_key_under_the_customers_prefix_is_an_object_of_its_area() -> None:
    found = blob.locate("s3://imports-bucket/landing/acme/2024/users.csv", "acme", CONFIG)
    assert found == S3Object("imports-bucket", "landing/acme/2024/users.csv", AREA.endpoint_url, AREA.region)
    assert (found.suffix, found.name) == (".csv", "users.csv")


def test_a_prefix_written_with_slashes_in_the_config_means_the_same_area() -> None:
    area = S3Area("imports-bucket", "/landing/", None, None)
    assert parse("s3://imports-bucket/landing/acme/u.csv", "acme", area).key == "landing/acme/u.csv"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("s3://imports-bucket/landing/acme/../globex/users.csv", "'..'"),
        ("s3://imports-bucket/landing/acme/./users.csv", "'..'"),
        ("s3://imports-bucket/landing/acme//users.csv", "empty"),
        ("s3://imports-bucket/landing/globex/users.csv", "outside the S3 area of customer 'acme'"),
        ("s3://imports-bucket/landing/acmeco/users.csv", "outside the S3 area"),
        ("s3://imports-bucket/landing/acme/", "empty"),
        ("s3://imports-bucket/landing/acme", "outside the S3 area"),
        ("s3://imports-bucket/users.csv", "outside the S3 area"),
        ("s3://other-bucket/landing/acme/users.csv", "may read only 'imports-bucket'"),
        ("s3://Imports_Bucket/landing/acme/users.csv", "not a valid bucket name"),
        ("s3://ab/landing/acme/users.csv", "not a valid bucket name"),
        ("s3://" + "b" * 64 + "/landing/acme/users.csv", "not a valid bucket name"),
        ("s3://imports..bucket/landing/acme/users.csv", "not a valid bucket name"),
        ("s3://192.168.1.1/landing/acme/users.csv", "not a valid bucket name"),
        ("s3:///landing/acme/users.csv", "not a valid bucket name"),
        ("s3://imports-bucket", "with a key"),
        ("s3://imports-bucket/landing/acme/" + "k" * 1012, "over S3's limit of 1024"),
        ("s3://imports-bucket/landing/acme/" + "é" * 507, "over S3's limit of 1024"),
        ("s3://imports-bucket/landing/acme/users.csv?versionId=1", "without query"),
        ("s3://imports-bucket/landing/acme/a\nb.csv", "control characters"),
        ("s3://imports-bucket/landing/acme/a\x00b.csv", "NUL"),
    ],
)
def test_a_uri_outside_the_area_or_against_s3s_rules_is_refused_naming_the_rule(uri: str, says: str) -> None:
    with pytest.raises(BlobRefused) as refused:
        blob.locate(uri, "acme", CONFIG)
    assert says in str(refused.value)


def test_a_key_of_exactly_1024_bytes_is_accepted() -> None:
    key = "landing/acme/" + "k" * (1024 - len("landing/acme/"))
    assert blob.locate(f"s3://imports-bucket/{key}", "acme", CONFIG).key == key


def test_a_customer_without_an_s3_area_cannot_name_an_s3_uri() -> None:
    with pytest.raises(BlobRefused, match="customer 'initech': it has no S3 area"):
        blob.locate("s3://imports-bucket/landing/initech/users.csv", "initech", CONFIG)


def test_file_uris_still_resolve_for_a_customer_with_an_s3_area(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "acme").mkdir()
    target = tmp_path / "acme" / "u.csv"
    target.write_text("a\n")
    assert blob.locate(target.as_uri(), "acme", CONFIG.with_(blob_root=tmp_path)) == target.resolve()
