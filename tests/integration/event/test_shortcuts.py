"""The one-statement seat moves on the real database: one statement, the same answers, no deadlock.

Each test that races a shortcut holds a row lock in a transaction of its own,
waits until the shortcut queues behind it, and only then lets go, so the
interleaving it checks happens every run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from event_svc import bootstrap as event_bootstrap
from event_svc.adapters.repository import SqlEventRepository, SqlReservationRepository
from event_svc.adapters.tables import events
from event_svc.domain import commands
from event_svc.domain.model import Event, Reservation, ReservationStatus
from event_svc.service_layer.handlers import EventHandlers
from event_svc.service_layer.unit_of_work import SqlEventUnitOfWork
from event_svc.settings import Settings
from eventbooking.errors import Aborted, FailedPrecondition
from tests.integration.event.conftest import MovableClock, reservation_row, seats

S = ReservationStatus


@pytest.fixture
def long_way(event_settings: Settings, engine: AsyncEngine, clock: MovableClock) -> EventHandlers:
    """Handlers without shortcuts, on the same database and clock as `timed_handlers`."""
    return event_bootstrap.bootstrap(
        event_settings, uow=lambda: SqlEventUnitOfWork(engine), clock=clock
    )


async def new_event(handlers: EventHandlers, *, capacity: int) -> Event:
    return await handlers.create_event(
        commands.CreateEvent(
            name=f"shortcut {uuid.uuid4().hex[:8]}",
            venue="Club",
            starts_at=datetime(2030, 3, 3, 20, 0, tzinfo=UTC),
            capacity=capacity,
            price_cents=1750,
        )
    )


def reserve_cmd(
    event: Event, quantity: int, *, hold_seconds: int | None = None
) -> commands.ReserveSeats:
    return commands.ReserveSeats(
        reservation_id=uuid.uuid4(),
        event_id=event.event_id,
        quantity=quantity,
        hold_seconds=hold_seconds,
    )


def confirm(reservation: Reservation) -> commands.ConfirmReservation:
    return commands.ConfirmReservation(reservation_id=reservation.reservation_id)


def release(reservation: Reservation) -> commands.ReleaseReservation:
    return commands.ReleaseReservation(reservation_id=reservation.reservation_id)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements sent on `engine` inside the block."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def lock_waiters(engine: AsyncEngine, count: int) -> None:
    """Return once `count` sessions of this database wait for a lock."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with engine.connect() as conn:
        for _ in range(500):
            waiting = (await conn.execute(query)).scalar_one()
            # pg_stat_activity is read once per transaction; a new one sees it afresh.
            await conn.rollback()
            if waiting >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} sessions ever waited for a lock")


async def assert_alike(engine: AsyncEngine, short: Reservation, long: Reservation) -> None:
    """Two replies, and the rows behind them, differ in nothing but the reservation id."""
    assert replace(short, reservation_id=long.reservation_id) == long
    assert short.expires_at is not None
    assert short.expires_at.tzinfo is UTC
    rows = [await reservation_row(engine, r.reservation_id) for r in (short, long)]
    fields = [
        {k: v for k, v in row._mapping.items() if k != "reservation_id"}
        for row in rows
        if row is not None
    ]
    assert len(fields) == 2
    assert fields[0] == fields[1]


async def test_reserve_confirm_release_and_sold_out_are_one_statement_each(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=3)
    with statements(engine) as sent:
        held = await handlers.reserve_seats(reserve_cmd(event, 2))
    assert len(sent) == 1
    with statements(engine) as sent:
        confirmed = await handlers.confirm_reservation(confirm(held))
    assert len(sent) == 1
    assert confirmed.status is S.CONFIRMED
    other = await handlers.reserve_seats(reserve_cmd(event, 1))
    sold_out = pytest.raises(FailedPrecondition, match="sold out: 0 seats available, 1 requested")
    with statements(engine) as sent, sold_out:
        await handlers.reserve_seats(reserve_cmd(event, 1))
    assert len(sent) == 1
    with statements(engine) as sent:
        released = await handlers.release_reservation(release(other))
    assert len(sent) == 1
    assert released.status is S.RELEASED
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 2, 1)


async def test_shortcuts_answer_and_write_what_the_unit_of_work_does(
    timed_handlers: EventHandlers, long_way: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(timed_handlers, capacity=8)
    both = (timed_handlers, long_way)
    sold = [await h.reserve_seats(reserve_cmd(event, 2)) for h in both]
    await assert_alike(engine, *sold)
    await assert_alike(
        engine, *[await h.confirm_reservation(confirm(r)) for h, r in zip(both, sold, strict=True)]
    )
    held = [await h.reserve_seats(reserve_cmd(event, 1, hold_seconds=90)) for h in both]
    await assert_alike(engine, *held)
    await assert_alike(
        engine, *[await h.release_reservation(release(r)) for h, r in zip(both, held, strict=True)]
    )
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 4, 4)

    await timed_handlers.reserve_seats(reserve_cmd(event, 3))
    refusals = []
    for handlers in both:
        with pytest.raises(FailedPrecondition) as refused:
            await handlers.reserve_seats(reserve_cmd(event, 2))
        refusals.append(refused.value.message)
    assert refusals == ["sold out: 1 seats available, 2 requested"] * 2


async def test_a_repeated_reserve_on_a_sold_out_event_gets_its_reservation_back(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=2)
    cmd = reserve_cmd(event, 2)
    first = await handlers.reserve_seats(cmd)
    assert await handlers.reserve_seats(cmd) == first
    await handlers.release_reservation(release(first))
    await handlers.reserve_seats(reserve_cmd(event, 2))
    with pytest.raises(Aborted, match="was released already"):
        await handlers.reserve_seats(cmd)
    assert (await seats(engine, event.event_id)).held == 2


async def test_seats_taken_while_a_reserve_waits_leave_no_trace_of_it(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=3)
    cmd = reserve_cmd(event, 2)
    rival = Reservation(
        reservation_id=uuid.uuid4(),
        event_id=event.event_id,
        quantity=3,
        amount_cents=3 * 1750,
        status=S.HELD,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    async with engine.connect() as conn:
        # A reserve of every seat, not committed yet: the shortcut's snapshot still shows them.
        assert await SqlReservationRepository(conn).claim(rival, now=datetime.now(UTC))
        assert await SqlEventRepository(conn).take_seats(event.event_id, 3) is not None
        waiting = asyncio.create_task(handlers.reserve_seats(cmd))
        await lock_waiters(engine, 1)
        await conn.commit()
    with pytest.raises(FailedPrecondition, match="sold out: 0 seats available, 2 requested"):
        await waiting
    assert await reservation_row(engine, cmd.reservation_id) is None
    after = await seats(engine, event.event_id)
    assert (after.held, after.available) == (3, 0)


async def test_a_reserve_waiting_on_its_event_and_a_retry_of_it_do_not_deadlock(
    handlers: EventHandlers, long_way: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=5)
    cmd = reserve_cmd(event, 2)
    async with engine.connect() as conn:
        # Someone else's seat move holds the event row.
        await conn.execute(
            sa.update(events)
            .where(events.c.event_id == event.event_id)
            .values(held_seats=events.c.held_seats)
        )
        shortcut = asyncio.create_task(handlers.reserve_seats(cmd))
        await lock_waiters(engine, 1)
        # The retry claims the id, then takes seats: the reservation row before the event row.
        retry = asyncio.create_task(long_way.reserve_seats(cmd))
        await lock_waiters(engine, 2)
        # A shortcut that locked the event row before inserting the id would now deadlock.
        await conn.rollback()
    first, second = await asyncio.wait_for(asyncio.gather(shortcut, retry), timeout=10)
    assert first == second
    assert first.status is S.HELD
    after = await seats(engine, event.event_id)
    assert (after.held, after.available) == (2, 3)


async def test_a_lapsed_hold_is_released_the_long_way_with_its_seats(
    timed_handlers: EventHandlers, clock: MovableClock, engine: AsyncEngine
) -> None:
    event = await new_event(timed_handlers, capacity=4)
    held = await timed_handlers.reserve_seats(reserve_cmd(event, 3, hold_seconds=1))
    clock.advance(2)
    with statements(engine) as sent:
        released = await timed_handlers.release_reservation(release(held))
    assert len(sent) > 1
    assert released == replace(held, status=S.RELEASED)
    after = await seats(engine, event.event_id)
    assert (after.held, after.available) == (0, 4)
