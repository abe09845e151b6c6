"""Opaque keyset page tokens: the sort key of the last row of a page."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from eventbooking.errors import InvalidArgument


def encode_token(at: datetime, row_id: uuid.UUID) -> str:
    """Return the token that continues a listing after the row (`at`, `row_id`)."""
    raw = json.dumps([at.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    """Return the position a token points after, None for "", or raise InvalidArgument."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token this service returned") from None
