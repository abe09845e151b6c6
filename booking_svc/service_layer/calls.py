"""What each participant call of a saga sends, and what its reply is recorded as.

A call is built from the saga and its booking alone, so the same call, with
the same key, is built again after a crash or by another replica.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from booking_svc.adapters.participants import Participants
from booking_svc.domain.model import Booking
from booking_svc.domain.saga import Operation, call_key

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# The hold asked for when the booking saga reserves seats; confirm must come within it.
DEFAULT_HOLD_SECONDS = 300


@dataclass(frozen=True)
class Call:
    """One participant call: what the log records of it, and how to make it."""

    summary: dict[str, object]
    invoke: Callable[[Participants, float], Awaitable[dict[str, Any]]]


def _reply(result: DataclassInstance) -> dict[str, Any]:
    """A participant's reply as a JSON-ready summary for the log.

    Replies are flat dataclasses of scalars, so their fields are read as they are:
    `asdict` would deep-copy each value on the hot path for nothing.
    """
    summary: dict[str, Any] = {}
    for reply_field in fields(result):
        value = getattr(result, reply_field.name)
        summary[reply_field.name] = value.isoformat() if isinstance(value, datetime) else value
    return summary


def call_for(
    operation: Operation,
    *,
    kind: str,
    step_name: str,
    saga_id: uuid.UUID,
    booking_saga_id: uuid.UUID,
    booking: Booking,
    hold_seconds: int = DEFAULT_HOLD_SECONDS,
) -> Call:
    """The call `operation` makes for this step of this saga."""
    key = call_key(operation, saga_id=saga_id, booking_saga_id=booking_saga_id, step_name=step_name)
    if operation is Operation.RESERVE_SEATS:
        return Call(
            {
                "reservation_id": key,
                "event_id": str(booking.event_id),
                "quantity": booking.quantity,
                "hold_seconds": hold_seconds,
            },
            lambda p, deadline: _reserve(p, booking, uuid.UUID(key), hold_seconds, deadline),
        )
    if operation is Operation.CONFIRM_RESERVATION:
        return Call(
            {"reservation_id": key},
            lambda p, deadline: _confirm(p, uuid.UUID(key), deadline),
        )
    if operation is Operation.RELEASE_RESERVATION:
        return Call(
            {"reservation_id": key},
            lambda p, deadline: _release(p, uuid.UUID(key), deadline),
        )
    if operation is Operation.CHARGE:
        return Call(
            {
                "account_id": str(booking.account_id),
                "amount_cents": booking.amount_cents,
                "idempotency_key": key,
                "reference": str(booking.booking_id),
            },
            lambda p, deadline: _charge(p, booking, key, deadline),
        )
    if operation is Operation.REFUND:
        reason = (
            f"booking {booking.booking_id} cancelled"
            if kind == "cancel"
            else f"booking {booking.booking_id} failed"
        )
        return Call(
            {"idempotency_key": key, "reason": reason},
            lambda p, deadline: _refund(p, key, reason, deadline),
        )
    notification = _notification(kind, booking)
    return Call(
        {"idempotency_key": key, "kind": notification[0]},
        lambda p, deadline: _notify(p, booking, key, notification, deadline),
    )


async def _reserve(
    p: Participants, booking: Booking, reservation_id: uuid.UUID, hold: int, deadline: float
) -> dict[str, Any]:
    held = await p.reserve_seats(
        reservation_id=reservation_id,
        event_id=booking.event_id,
        quantity=booking.quantity,
        hold_seconds=hold,
        deadline=deadline,
    )
    return _reply(held)


async def _confirm(p: Participants, reservation_id: uuid.UUID, deadline: float) -> dict[str, Any]:
    return _reply(await p.confirm_reservation(reservation_id=reservation_id, deadline=deadline))


async def _release(p: Participants, reservation_id: uuid.UUID, deadline: float) -> dict[str, Any]:
    return _reply(await p.release_reservation(reservation_id=reservation_id, deadline=deadline))


async def _charge(p: Participants, booking: Booking, key: str, deadline: float) -> dict[str, Any]:
    charged = await p.charge(
        account_id=booking.account_id,
        amount_cents=booking.amount_cents,
        idempotency_key=key,
        reference=str(booking.booking_id),
        deadline=deadline,
    )
    return _reply(charged)


async def _refund(p: Participants, key: str, reason: str, deadline: float) -> dict[str, Any]:
    return _reply(await p.refund(idempotency_key=key, reason=reason, deadline=deadline))


def _notification(kind: str, booking: Booking) -> tuple[str, str, str]:
    seats = f"{booking.quantity} seat{'s' if booking.quantity != 1 else ''}"
    amount = f"{booking.amount_cents / 100:.2f}"
    if kind == "cancel":
        return (
            "booking_cancelled",
            "Your booking is cancelled",
            f"Booking {booking.booking_id} ({seats} for event {booking.event_id}) is cancelled; "
            f"{amount} is refunded.",
        )
    return (
        "booking_confirmed",
        "Your booking is confirmed",
        f"Booking {booking.booking_id} ({seats} for event {booking.event_id}) is confirmed; "
        f"{amount} is charged.",
    )


async def _notify(
    p: Participants,
    booking: Booking,
    key: str,
    notification: tuple[str, str, str],
    deadline: float,
) -> dict[str, Any]:
    kind, subject, body = notification
    notified = await p.send_notification(
        idempotency_key=key,
        account_id=booking.account_id,
        booking_id=booking.booking_id,
        kind=kind,
        subject=subject,
        body=body,
        deadline=deadline,
    )
    return _reply(notified)
