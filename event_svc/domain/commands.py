"""Validated commands: each `parse` turns raw request fields into a command or raises."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from eventbooking.errors import InvalidArgument
from eventbooking.validation import (
    MAX_NAME_LENGTH,
    int_in_range,
    page_size,
    parse_uuid,
    require_text,
)

MAX_CAPACITY = 100_000
MAX_PRICE_CENTS = 10_000_000_000  # 100 million in major units per seat
MAX_QUANTITY = 1000
MAX_HOLD_SECONDS = 3600


def _hold_seconds(value: int) -> int | None:
    if value == 0:
        return None
    if not 1 <= value <= MAX_HOLD_SECONDS:
        raise InvalidArgument(
            f"hold_seconds must be between 1 and {MAX_HOLD_SECONDS}, or 0 for the service "
            f"default; got {value}"
        )
    return value


@dataclass(frozen=True)
class CreateEvent:
    name: str
    venue: str
    starts_at: datetime
    capacity: int
    price_cents: int

    @classmethod
    def parse(
        cls,
        *,
        name: str,
        venue: str,
        starts_at: datetime | None,
        capacity: int,
        price_cents: int,
    ) -> CreateEvent:
        if starts_at is None:
            raise InvalidArgument("starts_at is required")
        return cls(
            name=require_text("name", name, max_length=MAX_NAME_LENGTH),
            venue=require_text("venue", venue, max_length=MAX_NAME_LENGTH),
            starts_at=starts_at,
            capacity=int_in_range("capacity", capacity, low=1, high=MAX_CAPACITY),
            price_cents=int_in_range("price_cents", price_cents, low=0, high=MAX_PRICE_CENTS),
        )


@dataclass(frozen=True)
class ListEvents:
    page_size: int
    after: tuple[datetime, uuid.UUID] | None

    @classmethod
    def parse(cls, *, size: int, after: tuple[datetime, uuid.UUID] | None) -> ListEvents:
        return cls(page_size=page_size(size), after=after)


@dataclass(frozen=True)
class ReserveSeats:
    reservation_id: uuid.UUID
    event_id: uuid.UUID
    quantity: int
    # None asks for the service's default hold.
    hold_seconds: int | None

    @classmethod
    def parse(
        cls, *, reservation_id: str, event_id: str, quantity: int, hold_seconds: int
    ) -> ReserveSeats:
        return cls(
            reservation_id=parse_uuid("reservation_id", reservation_id),
            event_id=parse_uuid("event_id", event_id),
            quantity=int_in_range("quantity", quantity, low=1, high=MAX_QUANTITY),
            hold_seconds=_hold_seconds(hold_seconds),
        )


@dataclass(frozen=True)
class ConfirmReservation:
    reservation_id: uuid.UUID

    @classmethod
    def parse(cls, *, reservation_id: str) -> ConfirmReservation:
        return cls(reservation_id=parse_uuid("reservation_id", reservation_id))


@dataclass(frozen=True)
class ReleaseReservation:
    reservation_id: uuid.UUID

    @classmethod
    def parse(cls, *, reservation_id: str) -> ReleaseReservation:
        return cls(reservation_id=parse_uuid("reservation_id", reservation_id))
