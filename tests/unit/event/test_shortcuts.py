"""How the handlers use a seat shortcut's answer: trust a result, fall back on None."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from event_svc.adapters.repository import SoldOut
from event_svc.domain import commands
from event_svc.domain.model import Reservation, ReservationStatus
from event_svc.service_layer.handlers import EventHandlers
from eventbooking.errors import FailedPrecondition, NotFound
from tests.unit.event.conftest import DEFAULT_HOLD
from tests.unit.event.fakes import FakeClock, FakeUnitOfWork, Store

S = ReservationStatus


@dataclass
class ScriptedShortcuts:
    """Answers what the test set, and records what it was asked."""

    hold: Reservation | SoldOut | None = None
    move: Reservation | None = None
    calls: list[tuple[object, ...]] = field(default_factory=list)

    async def hold_new(
        self,
        reservation_id: uuid.UUID,
        *,
        event_id: uuid.UUID,
        quantity: int,
        expires_at: datetime,
        now: datetime,
    ) -> Reservation | SoldOut | None:
        self.calls.append(("hold_new", reservation_id, event_id, quantity, expires_at, now))
        return self.hold

    async def move_live_hold(
        self, reservation_id: uuid.UUID, status: ReservationStatus, *, now: datetime
    ) -> Reservation | None:
        self.calls.append(("move_live_hold", reservation_id, status, now))
        return self.move


def handlers_with(shortcuts: ScriptedShortcuts, store: Store, clock: FakeClock) -> EventHandlers:
    return EventHandlers(
        lambda: FakeUnitOfWork(store),
        clock=clock,
        default_hold=DEFAULT_HOLD,
        shortcuts=shortcuts,
    )


def a_reservation(status: ReservationStatus) -> Reservation:
    return Reservation(
        reservation_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        quantity=2,
        amount_cents=3000,
        status=status,
        expires_at=datetime(2030, 1, 1, 12, 5, tzinfo=UTC),
    )


async def test_a_hold_from_the_shortcut_is_the_reply_and_the_store_is_not_touched(
    store: Store, clock: FakeClock
) -> None:
    held = a_reservation(S.HELD)
    shortcuts = ScriptedShortcuts(hold=held)
    cmd = commands.ReserveSeats(
        reservation_id=held.reservation_id,
        event_id=uuid.uuid4(),
        quantity=2,
        hold_seconds=30,
    )
    assert await handlers_with(shortcuts, store, clock).reserve_seats(cmd) == held
    assert shortcuts.calls == [
        (
            "hold_new",
            cmd.reservation_id,
            cmd.event_id,
            2,
            clock.now + timedelta(seconds=30),
            clock.now,
        )
    ]
    assert store.commits == 0


async def test_sold_out_from_the_shortcut_is_refused_as_the_unit_of_work_refuses_it(
    store: Store, clock: FakeClock
) -> None:
    shortcuts = ScriptedShortcuts(hold=SoldOut(available=1))
    cmd = commands.ReserveSeats(
        reservation_id=uuid.uuid4(), event_id=uuid.uuid4(), quantity=3, hold_seconds=None
    )
    with pytest.raises(FailedPrecondition, match=r"^sold out: 1 seats available, 3 requested$"):
        await handlers_with(shortcuts, store, clock).reserve_seats(cmd)
    assert store.commits == 0
    assert store.reservations == {}


async def test_without_a_shortcut_the_unit_of_work_answers(store: Store, clock: FakeClock) -> None:
    handlers = handlers_with(ScriptedShortcuts(), store, clock)
    rid = uuid.uuid4()
    with pytest.raises(NotFound, match="does not exist"):
        await handlers.reserve_seats(
            commands.ReserveSeats(
                reservation_id=rid, event_id=uuid.uuid4(), quantity=1, hold_seconds=None
            )
        )
    with pytest.raises(NotFound, match=f"reservation {rid} does not exist"):
        await handlers.confirm_reservation(commands.ConfirmReservation(reservation_id=rid))
    tomb = await handlers.release_reservation(commands.ReleaseReservation(reservation_id=rid))
    assert tomb == Reservation.tombstone(rid)


@pytest.mark.parametrize("status", [S.CONFIRMED, S.RELEASED])
async def test_confirm_and_release_reply_with_the_hold_the_shortcut_moved(
    store: Store, clock: FakeClock, status: ReservationStatus
) -> None:
    moved = a_reservation(status)
    shortcuts = ScriptedShortcuts(move=moved)
    handlers = handlers_with(shortcuts, store, clock)
    if status is S.CONFIRMED:
        reply = await handlers.confirm_reservation(
            commands.ConfirmReservation(reservation_id=moved.reservation_id)
        )
    else:
        reply = await handlers.release_reservation(
            commands.ReleaseReservation(reservation_id=moved.reservation_id)
        )
    assert reply == moved
    assert shortcuts.calls == [("move_live_hold", moved.reservation_id, status, clock.now)]
    assert store.commits == 0
