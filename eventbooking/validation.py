"""Checks of request fields that raise `InvalidArgument` with a readable message."""

from __future__ import annotations

import uuid

from eventbooking.errors import InvalidArgument

MAX_NAME_LENGTH = 200
MAX_TEXT_LENGTH = 10_000
MAX_KEY_LENGTH = 200


def parse_uuid(field: str, value: str) -> uuid.UUID:
    """Return `value` as a UUID, or explain which field is wrong and why."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field} must be a UUID, got {_preview(value)}") from None


def require_text(field: str, value: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """Return `value` stripped; it must be non-empty and at most `max_length` characters."""
    text = optional_text(field, value, max_length=max_length)
    if not text:
        raise InvalidArgument(f"{field} is required")
    return text


def optional_text(field: str, value: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """Return `value` stripped, or "" when empty; at most `max_length` characters."""
    text = value.strip()
    if len(text) > max_length:
        raise InvalidArgument(f"{field} is {len(text)} characters long; the limit is {max_length}")
    if "\x00" in text:
        raise InvalidArgument(f"{field} must not contain NUL characters")
    return text


def int_in_range(field: str, value: int, *, low: int, high: int) -> int:
    """Return `value` when low <= value <= high, otherwise explain the range."""
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high}, got {value}")
    return value


def page_size(value: int, *, default: int = 50, maximum: int = 500) -> int:
    """Return the page size to use: `default` for 0, otherwise 1..maximum."""
    if value == 0:
        return default
    return int_in_range("page_size", value, low=1, high=maximum)


def _preview(value: str, limit: int = 40) -> str:
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)
