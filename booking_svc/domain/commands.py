"""Validated commands: each `parse` turns raw request fields into a command or raises."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from booking_svc.domain.saga import DEFINITIONS
from booking_svc.domain.states import SagaStatus
from eventbooking.errors import InvalidArgument
from eventbooking.validation import (
    MAX_KEY_LENGTH,
    int_in_range,
    optional_text,
    page_size,
    parse_uuid,
    require_text,
)

# The event service refuses more than this in one reservation, so the booking does too.
MAX_QUANTITY = 1000
MAX_AGE_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class CreateBooking:
    account_id: uuid.UUID
    event_id: uuid.UUID
    quantity: int
    idempotency_key: str

    @classmethod
    def parse(
        cls, *, account_id: str, event_id: str, quantity: int, idempotency_key: str
    ) -> CreateBooking:
        return cls(
            account_id=parse_uuid("account_id", account_id),
            event_id=parse_uuid("event_id", event_id),
            quantity=int_in_range("quantity", quantity, low=1, high=MAX_QUANTITY),
            idempotency_key=require_text(
                "idempotency_key", idempotency_key, max_length=MAX_KEY_LENGTH
            ),
        )


@dataclass(frozen=True)
class ListBookings:
    # None lists every account's bookings.
    account_id: uuid.UUID | None
    page_size: int
    after: tuple[datetime, uuid.UUID] | None

    @classmethod
    def parse(
        cls, *, account_id: str, size: int, after: tuple[datetime, uuid.UUID] | None
    ) -> ListBookings:
        return cls(
            account_id=parse_uuid("account_id", account_id) if account_id else None,
            page_size=page_size(size),
            after=after,
        )


@dataclass(frozen=True)
class ListSagas:
    status: SagaStatus | None
    kind: str | None
    step: str | None
    min_age_seconds: int
    page_size: int
    after: tuple[datetime, uuid.UUID] | None

    @classmethod
    def parse(
        cls,
        *,
        status: SagaStatus | None,
        kind: str,
        step: str,
        min_age_seconds: int,
        size: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> ListSagas:
        kind = optional_text("kind", kind)
        if kind and kind not in DEFINITIONS:
            raise InvalidArgument(f"kind must be one of {sorted(DEFINITIONS)}, got {kind!r}")
        step = optional_text("step", step)
        steps = {s.name for d in DEFINITIONS.values() for s in d.steps}
        if step and step not in steps:
            raise InvalidArgument(f"step must be one of {sorted(steps)}, got {step!r}")
        return cls(
            status=status,
            kind=kind or None,
            step=step or None,
            min_age_seconds=int_in_range(
                "min_age_seconds", min_age_seconds, low=0, high=MAX_AGE_SECONDS
            ),
            page_size=page_size(size),
            after=after,
        )
