"""Enqueue requests are refused before any job exists, naming the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Config, CustomerSettings
from service.edges.api import Api
from service.errors import RequestRefused
from service.schema.products import ProductRegistry
from service.stages.enqueue import check_request
from tests.conftest import ROOT

PRODUCTS = ProductRegistry.load(ROOT / "schemas")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "u.csv").write_text("external_id,email\n")
    return Config(blob_root=tmp_path, customers={"acme": "dbname=acme"})


def body(config: Config, **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "customer_id": "acme",
        "product_type": "users",
        "blob_uri": (config.blob_root / "acme" / "u.csv").as_uri(),
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"customer_id": 5}, "customer_id"),
        ({"customer_id": "nobody"}, "customer_id"),
        ({"product_type": "planets"}, "product_type"),
        ({"colour": "red"}, "colour"),
        ({"options": []}, "options"),
        ({"options": {"dry_run": "yes"}}, "options.dry_run"),
        ({"options": {"format": "xls"}}, "options.format"),
        ({"options": {"delimiter": ";;"}}, "options.delimiter"),
        ({"options": {"encoding": "klingon"}}, "options.encoding"),
        ({"options": {"on_invalid": "ignore"}}, "options.on_invalid"),
        ({"options": {"sheet": "a\x00b"}}, "options.sheet"),
        ({"options": {"sheet": ["Q1", "a\x00b"]}}, "options.sheet"),
        ({"options": {"sheet": ""}}, "options.sheet"),
        ({"options": {"sheet": []}}, "options.sheet"),
        ({"options": {"sheet": ["Q1", ""]}}, "options.sheet"),
        ({"options": {"sheet": ["Q1", 2]}}, "options.sheet"),
        ({"options": {"sheet": ["Q1", "Q2", "Q1"]}}, "options.sheet"),
        ({"options": {"sheet": [f"S{i}" for i in range(256)]}}, "options.sheet"),
        ({"options": {"sheet": {"name": "Q1"}}}, "options.sheet"),
        ({"options": {"sheet": 3}}, "options.sheet"),
        ({"options": {"mode": "merge"}}, "options.mode"),
        ({"options": {"mode": 1}}, "options.mode"),
        ({"options": {"mode": "upsert", "atomic": False}}, "options.atomic"),
        ({"options": {"mode": "replace", "atomic": False}}, "options.atomic"),
        ({"options": {"atomic": "true"}}, "options.atomic"),
        ({"options": {"allow_empty": True}}, "options.allow_empty"),
        ({"options": {"mode": "upsert", "allow_empty": True}}, "options.allow_empty"),
        ({"options": {"mode": "replace", "allow_empty": "yes"}}, "options.allow_empty"),
        ({"options": {"header_row": 0}}, "options.header_row"),
        ({"options": {"header_row": -3}}, "options.header_row"),
        ({"options": {"header_row": 1_048_577}}, "options.header_row"),
        ({"options": {"header_row": True}}, "options.header_row"),
        ({"options": {"header_row": "3"}}, "options.header_row"),
        ({"options": {"header_row": 2.5}}, "options.header_row"),
        ({"blob_uri": "s3://bucket/u.csv"}, "blob_uri"),
        ({"blob_uri": "file:///etc/passwd"}, "blob_uri"),
        ({"blob_uri": "file:///nowhere/\x00"}, "blob_uri"),
    ],
)
def test_a_bad_request_is_refused_naming_its_field(config: Config, changes: dict[str, object], field: str) -> None:
    with pytest.raises(RequestRefused) as caught:
        check_request(body(config, **changes), config, PRODUCTS)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "append"},
        {"mode": "append", "atomic": True},
        {"mode": "append", "atomic": False},
        {"mode": "upsert"},
        {"mode": "upsert", "atomic": True},
        {"mode": "replace", "allow_empty": True, "on_invalid": "skip"},
    ],
)
def test_every_valid_combination_of_write_options_passes(config: Config, options: dict[str, object]) -> None:
    assert check_request(body(config, options=options), config, PRODUCTS).options == options


def test_upsert_is_refused_for_a_product_without_a_key(config: Config, tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "notes.json").write_text('{"type": "object", "properties": {"text": {"type": "string"}}}')
    products = ProductRegistry.load(schemas)
    request = body(config, product_type="notes", options={"mode": "upsert"})
    with pytest.raises(RequestRefused, match="x-key") as caught:
        check_request(request, config, products)
    assert caught.value.field == "options.mode"
    assert check_request(body(config, product_type="notes"), config, products).product_type == "notes"


def test_option_sheet_takes_a_name_or_a_list_of_distinct_names(config: Config) -> None:
    for sheet in ("Q1", ["Q1"], ["Q2", "Q1"], [f"S{i}" for i in range(255)]):
        assert check_request(body(config, options={"sheet": sheet}), config, PRODUCTS).options == {"sheet": sheet}
    with pytest.raises(RequestRefused, match="option sheet names 'Q1' twice"):
        check_request(body(config, options={"sheet": ["Q1", "Q2", "Q1"]}), config, PRODUCTS)
    with pytest.raises(RequestRefused, match="option sheet must be a sheet name or a list of sheet names"):
        check_request(body(config, options={"sheet": 3}), config, PRODUCTS)


def test_a_good_request_passes_with_its_options(config: Config) -> None:
    request = check_request(body(config, options={"dry_run": True, "delimiter": ";"}), config, PRODUCTS)
    assert request.options == {"dry_run": True, "delimiter": ";"}


@pytest.mark.parametrize("customer_id", ["a\x00b", "../x", ""])
def test_listing_jobs_of_a_malformed_customer_id_is_refused_before_any_query(config: Config, customer_id: str) -> None:
    api = Api(config.with_(tokens={"t": ("*",)}), jobs=None, products=PRODUCTS)  # type: ignore[arg-type]  # never reached
    with pytest.raises(RequestRefused) as caught:
        api.list_jobs(api.authenticate("Bearer t"), customer_id, None, None)
    assert caught.value.field == "customer_id"


def test_header_row_takes_a_whole_number_even_as_a_double_from_grpc(config: Config) -> None:
    assert check_request(body(config, options={"header_row": 3}), config, PRODUCTS).options == {"header_row": 3}
    checked = check_request(body(config, options={"header_row": 3.0}), config, PRODUCTS).options
    assert checked == {"header_row": 3} and type(checked["header_row"]) is int


HOOKS = "https://hooks.example.com/acme/"


@pytest.fixture
def hooked(config: Config) -> Config:
    """acme may call back under HOOKS; globex has no settings; initech has prefixes but no secret."""
    for customer in ("globex", "initech"):
        (config.blob_root / customer).mkdir()
        (config.blob_root / customer / "u.csv").write_text("external_id,email\n")
    settings = {
        "acme": CustomerSettings(webhook_prefixes=(HOOKS,), webhook_secret="k"),
        "initech": CustomerSettings(webhook_prefixes=(HOOKS,)),
    }
    customers = {"acme": "dbname=acme", "globex": "dbname=globex", "initech": "dbname=initech"}
    return config.with_(customers=customers, customer_settings=settings)


@pytest.mark.parametrize(
    "customer, url, rule",
    [
        ("acme", "https://hooks.example.com/globex/x", "must start with one of the customer's webhook_prefixes"),
        ("acme", "https://hooks.example.com.evil.net/acme/x", "webhook_prefixes"),
        ("acme", "ftp://hooks.example.com/acme/x", "must be an http:// or https:// URL"),
        ("acme", "https://user:pass@hooks.example.com/acme/x", "must not carry credentials"),
        ("acme", 42, "must be a str"),
        ("globex", HOOKS + "x", "customer 'globex' has no webhook_prefixes"),
        ("initech", HOOKS + "x", "customer 'initech' has no webhook_secret"),
    ],
)
def test_a_bad_callback_url_is_refused_naming_the_option_and_the_rule(
    hooked: Config, customer: str, url: object, rule: str
) -> None:
    request = body(hooked, customer_id=customer, options={"callback_url": url})
    request["blob_uri"] = (hooked.blob_root / customer / "u.csv").as_uri()
    with pytest.raises(RequestRefused, match=rule) as caught:
        check_request(request, hooked, PRODUCTS)
    assert caught.value.field == "options.callback_url"
    assert str(url) not in str(caught.value)  # never echoed: it may carry a password


def test_a_callback_url_under_the_customers_prefix_passes(hooked: Config) -> None:
    request = check_request(body(hooked, options={"callback_url": HOOKS + "done?job=1"}), hooked, PRODUCTS)
    assert request.options == {"callback_url": HOOKS + "done?job=1"}


# -- point 4 of issue 18: a request's shape is checked before any lookup, nothing echoed whole --


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"options": {"encoding": "x" * (1024 * 1024)}}, "options.encoding"),
        ({"options": {"encoding": "\ud800"}}, "options.encoding"),
        ({"options": {"encoding": "utf 8; drop"}}, "options.encoding"),
        ({"options": {"encoding": "rot13"}}, "options.encoding"),  # a codec, but not text
        ({"options": {"encoding": "base64"}}, "options.encoding"),
        ({"options": {"sheet": "\ud800"}}, "options.sheet"),
        ({"options": {"sheet": ["Q1", "a\udfffb"]}}, "options.sheet"),
        ({"options": {"sheet": "S" * 256}}, "options.sheet"),
        ({"options": {"delimiter": "\ud800"}}, "options.delimiter"),
        ({"blob_uri": "file:///tmp/\ud800.csv"}, "blob_uri"),
        ({"blob_uri": "file:///" + "a" * 5000}, "blob_uri"),
        ({"customer_id": "acme\udc80"}, "customer_id"),
    ],
)
def test_hostile_text_in_a_request_is_refused_naming_its_field_without_echoing_it(
    config: Config, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(RequestRefused) as refused:
        check_request(body(config, **changes), config, PRODUCTS)
    assert refused.value.field == field
    message = str(refused.value)
    assert len(message) < 300
    assert "\ud800" not in message and "\udfff" not in message
    message.encode("utf-8")  # what the edge sends must be text


def test_made_up_encoding_names_are_never_looked_up(config: Config) -> None:
    import encodings

    before = len(encodings._cache)  # type: ignore[attr-defined]
    for i in range(200):
        with pytest.raises(RequestRefused):
            check_request(body(config, options={"encoding": f"no-such-codec-{i}"}), config, PRODUCTS)
    assert len(encodings._cache) == before  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name", ["utf-8", "UTF-8", "utf_16_le", "latin-1", "Latin1", "cp1252", "iso8859-15", "mac-roman"]
)
def test_real_codec_names_pass_in_their_usual_spellings(config: Config, name: str) -> None:
    assert check_request(body(config, options={"encoding": name}), config, PRODUCTS).options["encoding"] == name


def test_a_body_nested_just_under_the_json_parsers_limit_is_a_400_naming_the_depth(config: Config) -> None:
    import json
    import sys

    depth = sys.getrecursionlimit() - 50
    nested = json.loads('{"options": {"sheet": ' + "[" * depth + "]" * depth + "}}")
    with pytest.raises(RequestRefused, match="nests deeper than 32 levels"):
        check_request(body(config, **nested), config, PRODUCTS)


def test_unknown_fields_and_long_values_are_named_cut_short(config: Config) -> None:
    many = {f"field_{i}_" + "x" * 1000: 1 for i in range(1000)}
    with pytest.raises(RequestRefused) as refused:
        check_request(body(config, **many), config, PRODUCTS)
    assert len(str(refused.value)) < 1000 and "995 more" in str(refused.value)
    with pytest.raises(RequestRefused) as refused:
        check_request(body(config, customer_id="c" * 100_000), config, PRODUCTS)
    assert len(str(refused.value)) < 300 and "100,000 characters" in str(refused.value)
