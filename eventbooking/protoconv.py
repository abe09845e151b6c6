"""Conversions between protobuf well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from eventbooking.errors import InvalidArgument


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(field: str, ts: Timestamp, *, required: bool = True) -> datetime | None:
    """A Timestamp as an aware UTC datetime; unset is None, or an error when required."""
    if ts.seconds == 0 and ts.nanos == 0:
        if required:
            raise InvalidArgument(f"{field} is required")
        return None
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time") from None
