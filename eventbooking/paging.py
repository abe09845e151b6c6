"""Opaque keyset page tokens: the sort key of the last row of a page."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from eventbooking.errors import InvalidArgument

T = TypeVar("T")
Position = tuple[datetime, uuid.UUID]


def split_page(
    rows: Sequence[T], size: int, *, position: Callable[[T], Position]
) -> tuple[list[T], Position | None]:
    """Cut `rows` (fetched with limit size + 1) to a page, and say where the next one starts."""
    page = list(rows[:size])
    if len(rows) > size and page:
        return page, position(page[-1])
    return page, None


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
