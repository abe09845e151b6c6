"""Who calls the in-process event server: the deployment's secrets, two accounts, a stranger.

account_svc does not run in these tests, so the server checks account
tokens with `fake_lookup`, a table of the two accounts' tokens.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping

from eventbooking import auth

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
SERVICE_CREDENTIAL = "service-" + secrets.token_hex(16)
USER_TOKEN = "user-" + secrets.token_hex(16)
OTHER_USER_TOKEN = "user-" + secrets.token_hex(16)
# Well formed, but no account holds it.
UNKNOWN_TOKEN = "user-" + secrets.token_hex(16)
ALL_TOKENS = (ADMIN_TOKEN, SERVICE_CREDENTIAL, USER_TOKEN, OTHER_USER_TOKEN, UNKNOWN_TOKEN)

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


ADMIN = bearer(ADMIN_TOKEN)
SERVICE = bearer(SERVICE_CREDENTIAL)
USER = bearer(USER_TOKEN)
ACCOUNTS = {USER_TOKEN: uuid.uuid4(), OTHER_USER_TOKEN: uuid.uuid4()}


def fake_lookup(tokens: Mapping[str, uuid.UUID]) -> auth.TokenLookup:
    """An `auth.TokenLookup` over a fixed table, standing in for account_svc."""

    async def lookup(token: str) -> uuid.UUID | None:
        return tokens.get(token)

    return lookup
