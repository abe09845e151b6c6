"""The repositories and handlers on a real PostgreSQL: state rules, idempotency, expiry."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from event_svc.adapters.repository import SqlEventRepository
from event_svc.domain import commands
from event_svc.domain.model import Event, Reservation, ReservationStatus, SeatChange
from event_svc.service_layer.handlers import EventHandlers
from event_svc.service_layer.sweeper import sweep_once
from eventbooking.errors import Aborted, FailedPrecondition, NotFound
from tests.integration.event.conftest import MovableClock, reservation_row, seats

S = ReservationStatus


async def new_event(
    handlers: EventHandlers,
    *,
    capacity: int = 10,
    price_cents: int = 1200,
    starts_at: datetime | None = None,
) -> Event:
    return await handlers.create_event(
        commands.CreateEvent(
            name=f"event {uuid.uuid4().hex[:8]}",
            venue="Arena",
            starts_at=starts_at or datetime(2030, 5, 5, 19, 30, tzinfo=UTC),
            capacity=capacity,
            price_cents=price_cents,
        )
    )


def reserve_cmd(
    event: Event,
    quantity: int = 1,
    *,
    reservation_id: uuid.UUID | None = None,
    hold_seconds: int | None = None,
) -> commands.ReserveSeats:
    return commands.ReserveSeats(
        reservation_id=reservation_id or uuid.uuid4(),
        event_id=event.event_id,
        quantity=quantity,
        hold_seconds=hold_seconds,
    )


async def test_an_event_reads_back_as_it_was_created(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=42, price_cents=9_999)
    assert await handlers.get_event(event.event_id) == event
    assert (await seats(engine, event.event_id)).available == 42


async def test_get_unknown_event_is_not_found(handlers: EventHandlers) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await handlers.get_event(uuid.uuid4())


async def test_list_events_pages_by_start_then_id(handlers: EventHandlers) -> None:
    # A start range of its own, so other tests' events stay out of the way.
    base = datetime(2200, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(100_000))
    offsets = [3, 0, 2, 0, 1, 3]
    mine = [await new_event(handlers, starts_at=base + timedelta(hours=h)) for h in offsets]
    expected = sorted(mine, key=lambda e: (e.starts_at, e.event_id))
    after: tuple[datetime, uuid.UUID] | None = (base - timedelta(microseconds=1), uuid.UUID(int=0))
    seen: list[Event] = []
    while after is not None and len(seen) < len(mine):
        page = await handlers.list_events(commands.ListEvents(page_size=4, after=after))
        assert len(page.events) <= 4
        seen += page.events
        after = page.next_after
    assert seen[: len(mine)] == expected


async def test_the_table_refuses_more_seats_than_capacity(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=3)
    async with engine.connect() as conn:
        repo = SqlEventRepository(conn)
        assert await repo.take_seats(event.event_id, 4) is None
        taken = await repo.take_seats(event.event_id, 3)
        assert taken is not None
        assert taken.available_seats == 0
        with pytest.raises(sa.exc.IntegrityError, match="never_over_capacity"):
            await repo.move_seats(event.event_id, SeatChange(held=0, sold=1))
        await conn.rollback()
    assert (await seats(engine, event.event_id)).held == 0


async def test_the_table_refuses_negative_counters(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers)
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError, match="held_not_negative"):
            await SqlEventRepository(conn).move_seats(event.event_id, SeatChange(held=-1, sold=0))
        await conn.rollback()
        with pytest.raises(sa.exc.IntegrityError, match="sold_not_negative"):
            await SqlEventRepository(conn).move_seats(event.event_id, SeatChange(held=0, sold=-1))
        await conn.rollback()


async def test_reserve_confirm_release_moves_seats_in_step(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=10, price_cents=1200)
    held = await handlers.reserve_seats(reserve_cmd(event, 4))
    assert (held.status, held.amount_cents) == (S.HELD, 4800)
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (4, 0, 6)

    confirmed = await handlers.confirm_reservation(
        commands.ConfirmReservation(reservation_id=held.reservation_id)
    )
    assert confirmed.status is S.CONFIRMED
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 4, 6)

    released = await handlers.release_reservation(
        commands.ReleaseReservation(reservation_id=held.reservation_id)
    )
    assert released.status is S.RELEASED
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 0, 10)
    got = await handlers.get_event(event.event_id)
    assert (got.held_seats, got.sold_seats, got.available_seats) == (0, 0, 10)


async def test_same_reserve_twice_makes_one_reservation_with_the_same_reply(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers)
    cmd = reserve_cmd(event, 3)
    first = await handlers.reserve_seats(cmd)
    second = await handlers.reserve_seats(cmd)
    assert second == first
    assert (await seats(engine, event.event_id)).held == 3
    with pytest.raises(Aborted, match="was made for 3 seats"):
        await handlers.reserve_seats(reserve_cmd(event, 2, reservation_id=cmd.reservation_id))


async def test_release_before_reserve_leaves_a_tombstone_that_refuses_the_late_reserve(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers)
    rid = uuid.uuid4()
    tomb = await handlers.release_reservation(commands.ReleaseReservation(reservation_id=rid))
    assert tomb == Reservation.tombstone(rid)
    row = await reservation_row(engine, rid)
    assert row is not None
    assert (row.status, row.event_id, row.quantity) == ("RELEASED", None, 0)
    with pytest.raises(Aborted, match=f"reservation {rid} was released before it arrived"):
        await handlers.reserve_seats(reserve_cmd(event, 2, reservation_id=rid))
    assert (await seats(engine, event.event_id)).held == 0
    row = await reservation_row(engine, rid)
    assert row is not None
    assert (row.status, row.event_id) == ("RELEASED", None)


async def test_sold_out_leaves_no_reservation_row(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=2)
    await handlers.reserve_seats(reserve_cmd(event, 2))
    cmd = reserve_cmd(event, 1)
    with pytest.raises(FailedPrecondition, match="sold out: 0 seats available, 1 requested"):
        await handlers.reserve_seats(cmd)
    assert await reservation_row(engine, cmd.reservation_id) is None
    assert (await seats(engine, event.event_id)).held == 2


async def test_a_short_reserve_expires_lapsed_holds_of_its_event_first(
    timed_handlers: EventHandlers, clock: MovableClock, engine: AsyncEngine
) -> None:
    event = await new_event(timed_handlers, capacity=2)
    old = await timed_handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=5))
    clock.advance(5)
    fresh = await timed_handlers.reserve_seats(reserve_cmd(event, 2))
    assert fresh.status is S.HELD
    row = await reservation_row(engine, old.reservation_id)
    assert row is not None
    assert row.status == "EXPIRED"
    assert (await seats(engine, event.event_id)).held == 2


async def test_the_sweeper_expires_a_one_second_hold_and_gives_its_seats_back(
    timed_handlers: EventHandlers, clock: MovableClock, engine: AsyncEngine
) -> None:
    event = await new_event(timed_handlers, capacity=5)
    held = await timed_handlers.reserve_seats(reserve_cmd(event, 3, hold_seconds=1))
    keep = await timed_handlers.reserve_seats(reserve_cmd(event, 1, hold_seconds=60))
    assert (await seats(engine, event.event_id)).held == 4
    await sweep_once(timed_handlers, batch_size=100)
    row = await reservation_row(engine, held.reservation_id)
    assert row is not None
    assert row.status == "HELD"

    clock.advance(1)
    assert await sweep_once(timed_handlers, batch_size=100) >= 1
    row = await reservation_row(engine, held.reservation_id)
    assert row is not None
    assert row.status == "EXPIRED"
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (1, 0, 4)
    kept = await reservation_row(engine, keep.reservation_id)
    assert kept is not None
    assert kept.status == "HELD"

    with pytest.raises(FailedPrecondition, match="hold expired at"):
        await timed_handlers.confirm_reservation(
            commands.ConfirmReservation(reservation_id=held.reservation_id)
        )
    assert (await seats(engine, event.event_id)).held == 1


async def test_confirm_past_expiry_expires_the_hold_itself(
    timed_handlers: EventHandlers, clock: MovableClock, engine: AsyncEngine
) -> None:
    event = await new_event(timed_handlers, capacity=5)
    held = await timed_handlers.reserve_seats(reserve_cmd(event, 2, hold_seconds=1))
    clock.advance(1.5)
    with pytest.raises(FailedPrecondition, match="hold expired at"):
        await timed_handlers.confirm_reservation(
            commands.ConfirmReservation(reservation_id=held.reservation_id)
        )
    row = await reservation_row(engine, held.reservation_id)
    assert row is not None
    assert row.status == "EXPIRED"
    assert (await seats(engine, event.event_id)).available == 5


async def test_release_of_a_confirmed_reservation_gives_sold_seats_back(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=6)
    other = await handlers.reserve_seats(reserve_cmd(event, 1))
    await handlers.confirm_reservation(
        commands.ConfirmReservation(reservation_id=other.reservation_id)
    )
    held = await handlers.reserve_seats(reserve_cmd(event, 4))
    await handlers.confirm_reservation(
        commands.ConfirmReservation(reservation_id=held.reservation_id)
    )
    assert (await seats(engine, event.event_id)).sold == 5
    released = await handlers.release_reservation(
        commands.ReleaseReservation(reservation_id=held.reservation_id)
    )
    assert released.status is S.RELEASED
    again = await handlers.release_reservation(
        commands.ReleaseReservation(reservation_id=held.reservation_id)
    )
    assert again == released
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 1, 5)
