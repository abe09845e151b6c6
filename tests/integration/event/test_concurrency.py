"""Many clients at once on the real database: capacity holds and one id means one reservation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Self

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from event_svc.adapters.tables import reservations
from event_svc.domain import commands
from event_svc.domain.model import Event, Reservation, ReservationStatus
from event_svc.service_layer.handlers import EventHandlers
from eventbooking.errors import Aborted, FailedPrecondition
from tests.integration.event.conftest import POOL_SIZE, reservation_row, seats

S = ReservationStatus
CLIENTS = 50


class PeakConnections:
    """Counts the most pool connections checked out at once while in use."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._pool = engine.sync_engine.pool
        self._now = 0
        self.most = 0

    def _checkout(self, *_: object) -> None:
        self._now += 1
        self.most = max(self.most, self._now)

    def _checkin(self, *_: object) -> None:
        self._now -= 1

    def __enter__(self) -> Self:
        sa.event.listen(self._pool, "checkout", self._checkout)
        sa.event.listen(self._pool, "checkin", self._checkin)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self._pool, "checkout", self._checkout)
        sa.event.remove(self._pool, "checkin", self._checkin)


async def new_event(handlers: EventHandlers, *, capacity: int) -> Event:
    return await handlers.create_event(
        commands.CreateEvent(
            name=f"rush {uuid.uuid4().hex[:8]}",
            venue="Stadium",
            starts_at=datetime(2030, 7, 1, tzinfo=UTC),
            capacity=capacity,
            price_cents=500,
        )
    )


def reserve_cmd(
    event: Event, quantity: int = 1, *, reservation_id: uuid.UUID | None = None
) -> commands.ReserveSeats:
    return commands.ReserveSeats(
        reservation_id=reservation_id or uuid.uuid4(),
        event_id=event.event_id,
        quantity=quantity,
        hold_seconds=None,
    )


async def test_fifty_clients_on_twenty_seats_get_exactly_twenty_holds(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    assert POOL_SIZE >= CLIENTS
    event = await new_event(handlers, capacity=20)
    cmds = [reserve_cmd(event) for _ in range(CLIENTS)]
    with PeakConnections(engine) as peak:
        results = await asyncio.gather(
            *(handlers.reserve_seats(cmd) for cmd in cmds), return_exceptions=True
        )
    # The clients really overlapped, each on a connection of its own.
    assert peak.most > 20

    held = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(held) == 20, [r for r in results if not isinstance(r, Reservation)][:3]
    assert len(refused) == 30
    assert all(r.status is S.HELD for r in held)
    assert all(str(r.message).startswith("sold out:") for r in refused)

    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (20, 0, 0)
    assert after.held + after.sold + after.available == after.capacity
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(sa.func.count()).where(reservations.c.event_id == event.event_id)
            )
        ).scalar_one()
    assert rows == 20
    got = await handlers.get_event(event.event_id)
    assert (got.held_seats, got.sold_seats, got.available_seats) == (20, 0, 0)


async def test_the_same_reserve_sent_at_once_holds_seats_once(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=10)
    cmd = reserve_cmd(event, 3)
    results = await asyncio.gather(*(handlers.reserve_seats(cmd) for _ in range(10)))
    assert len(set(results)) == 1
    assert (await seats(engine, event.event_id)).held == 3


async def test_confirms_and_releases_racing_on_one_id_end_released_with_no_seats(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=10)
    held = await handlers.reserve_seats(reserve_cmd(event, 2))
    rid = held.reservation_id
    calls = [
        handlers.confirm_reservation(commands.ConfirmReservation(reservation_id=rid))
        if i % 2
        else handlers.release_reservation(commands.ReleaseReservation(reservation_id=rid))
        for i in range(10)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    # A confirm after the release is refused; nothing else may fail.
    assert all(isinstance(r, Reservation | Aborted) for r in results), results
    row = await reservation_row(engine, rid)
    assert row is not None
    assert row.status == "RELEASED"
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 0, 10)


async def test_reserve_racing_release_on_fresh_ids_never_keeps_seats(
    handlers: EventHandlers, engine: AsyncEngine
) -> None:
    event = await new_event(handlers, capacity=40)
    ids = [uuid.uuid4() for _ in range(20)]

    async def race(rid: uuid.UUID) -> tuple[object, object]:
        reserve, release = await asyncio.gather(
            handlers.reserve_seats(reserve_cmd(event, 2, reservation_id=rid)),
            handlers.release_reservation(commands.ReleaseReservation(reservation_id=rid)),
            return_exceptions=True,
        )
        return reserve, release

    outcomes = await asyncio.gather(*(race(rid) for rid in ids))
    for rid, (reserve, release) in zip(ids, outcomes, strict=True):
        assert isinstance(release, Reservation)
        assert release.status is S.RELEASED
        if isinstance(reserve, Reservation):
            # The reserve won: the release came after and gave its seats back.
            assert release.event_id == event.event_id
        else:
            # The release won: a tombstone, and the late reserve was refused.
            assert isinstance(reserve, Aborted)
            assert release.is_tombstone
        row = await reservation_row(engine, rid)
        assert row is not None
        assert row.status == "RELEASED"
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold, after.available) == (0, 0, 40)
