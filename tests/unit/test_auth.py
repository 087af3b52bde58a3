"""Api.authenticate fails closed (SPEC 4): no tokens refuses, auth off opens, sha256 keys match."""

from __future__ import annotations

import hashlib

import pytest

from service.config import Config
from service.edges.api import OPERATOR, Access, Api, Unauthenticated


def api(**settings: object) -> Api:
    return Api(Config(**settings), jobs=None, products=None)  # type: ignore[arg-type]  # not reached


@pytest.mark.parametrize("header", [None, "", "Bearer anything", "Bearer dev-token"])
def test_with_no_tokens_configured_every_caller_is_refused(header: str | None) -> None:
    with pytest.raises(Unauthenticated, match="no API tokens are configured"):
        api().authenticate(header)


def test_auth_off_makes_every_caller_the_operator_even_with_tokens_configured() -> None:
    assert api(auth="off").authenticate(None) is OPERATOR
    assert api(auth="off", tokens={"t": ("acme",)}).authenticate(None) is OPERATOR


def test_a_sha256_key_matches_its_token_and_nothing_else() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    tokens = {f"sha256:{digest.upper()}": ("acme",), "plain": ("*",)}
    checked = api(tokens=tokens)
    assert checked.authenticate("Bearer s3cret") == Access(frozenset({"acme"}))
    assert checked.authenticate("bearer plain") is OPERATOR
    for wrong in (f"Bearer sha256:{digest}", f"Bearer {digest}", "Bearer s3cret2", "Basic s3cret", None):
        with pytest.raises(Unauthenticated):
            checked.authenticate(wrong)
