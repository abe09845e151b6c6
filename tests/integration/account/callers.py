"""The deployment's secrets for the in-process account server, and how calls carry tokens."""

from __future__ import annotations

import secrets

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
SERVICE_CREDENTIAL = "service-" + secrets.token_hex(16)
# Shaped like an account token, but no account holds it.
UNKNOWN_TOKEN = secrets.token_urlsafe(32)

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


ADMIN = bearer(ADMIN_TOKEN)
SERVICE = bearer(SERVICE_CREDENTIAL)
