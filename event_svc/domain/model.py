"""Events, seat reservations and the one table of reservation transitions."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime


class ReservationStatus(enum.Enum):
    HELD = "HELD"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class SeatChange:
    """How a transition moves an event's seat counters (available moves the other way)."""

    held: int
    sold: int


# Every allowed transition, with the seats it moves per reserved seat; nothing else is legal.
TRANSITIONS: dict[tuple[ReservationStatus, ReservationStatus], SeatChange] = {
    (ReservationStatus.HELD, ReservationStatus.CONFIRMED): SeatChange(held=-1, sold=1),
    (ReservationStatus.HELD, ReservationStatus.RELEASED): SeatChange(held=-1, sold=0),
    (ReservationStatus.HELD, ReservationStatus.EXPIRED): SeatChange(held=-1, sold=0),
    (ReservationStatus.CONFIRMED, ReservationStatus.RELEASED): SeatChange(held=0, sold=-1),
}


class IllegalTransition(ValueError):
    """A handler asked for a move the transition table does not allow: a bug, not bad input."""


@dataclass(frozen=True)
class Event:
    event_id: uuid.UUID
    name: str
    venue: str
    starts_at: datetime
    capacity: int
    price_cents: int
    held_seats: int
    sold_seats: int
    created_at: datetime

    @property
    def available_seats(self) -> int:
        return self.capacity - self.held_seats - self.sold_seats


@dataclass(frozen=True)
class Reservation:
    """Seats held for, or sold to, one reservation id; or the tombstone of an unknown id."""

    reservation_id: uuid.UUID
    event_id: uuid.UUID | None
    quantity: int
    amount_cents: int
    status: ReservationStatus
    expires_at: datetime | None

    @classmethod
    def tombstone(cls, reservation_id: uuid.UUID) -> Reservation:
        """The record of an id released before any seats were reserved with it."""
        return cls(
            reservation_id=reservation_id,
            event_id=None,
            quantity=0,
            amount_cents=0,
            status=ReservationStatus.RELEASED,
            expires_at=None,
        )

    @property
    def is_tombstone(self) -> bool:
        return self.event_id is None

    def same_request(self, event_id: uuid.UUID, quantity: int) -> bool:
        """True when a repeated ReserveSeats asks for exactly what this reservation holds."""
        return self.event_id == event_id and self.quantity == quantity

    def lapsed(self, now: datetime) -> bool:
        """True for a hold whose time is up, swept or not."""
        return (
            self.status is ReservationStatus.HELD
            and self.expires_at is not None
            and self.expires_at <= now
        )

    def move_to(self, status: ReservationStatus) -> tuple[Reservation, SeatChange]:
        """This reservation in `status`, and the seats its event must move for that."""
        per_seat = TRANSITIONS.get((self.status, status))
        if per_seat is None:
            raise IllegalTransition(
                f"reservation {self.reservation_id} cannot go from {self.status.value} "
                f"to {status.value}"
            )
        change = SeatChange(held=per_seat.held * self.quantity, sold=per_seat.sold * self.quantity)
        return replace(self, status=status), change


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    next_after: tuple[datetime, uuid.UUID] | None
