"""API tokens as the token file keeps them (SPEC 4): a new random token and its hashed entry."""

from __future__ import annotations

import hashlib
import json
import secrets

from service.config import CUSTOMER_ID, HASHED_PREFIX
from service.errors import RequestRefused


def hashed_key(token: str) -> str:
    """The token file key that matches token without holding it: sha256:<hex digest>."""
    return HASHED_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token(customers: str) -> tuple[str, str]:
    """A new random token for a comma-separated list of customer ids ("*" = all), and the
    line to add to the token file for it: (token, line)."""
    ids = [c.strip() for c in customers.split(",") if c.strip()]
    if not ids or not all(c == "*" or CUSTOMER_ID.match(c) for c in ids):
        raise RequestRefused(
            "--customer takes customer ids separated by commas, or * for every customer", field="--customer"
        )
    token = secrets.token_urlsafe(32)
    return token, f"{json.dumps(hashed_key(token))}: {json.dumps(ids)}"
