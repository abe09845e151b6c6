"""The sweeper expires lapsed holds in batches and outlives a database that is away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

import pytest

from event_svc.domain import commands
from event_svc.domain.model import ReservationStatus
from event_svc.service_layer.handlers import EventHandlers
from event_svc.service_layer.sweeper import sweep_forever, sweep_once
from tests.unit.event.conftest import DEFAULT_HOLD
from tests.unit.event.fakes import FakeClock, FakeUnitOfWork, Store


class FlakyUnitOfWorks:
    """Unit-of-work factory whose database is unreachable for the first `failures` calls."""

    def __init__(self, store: Store, *, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.calls = 0

    def __call__(self) -> FakeUnitOfWork:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("database is restarting")
        return FakeUnitOfWork(self._store)


async def hold_seats(handlers: EventHandlers, *, count: int, hold_seconds: int) -> uuid.UUID:
    event = await handlers.create_event(
        commands.CreateEvent(
            name="Gig",
            venue="Club",
            starts_at=datetime(2030, 1, 2, tzinfo=UTC),
            capacity=100,
            price_cents=100,
        )
    )
    for _ in range(count):
        await handlers.reserve_seats(
            commands.ReserveSeats(
                reservation_id=uuid.uuid4(),
                event_id=event.event_id,
                quantity=1,
                hold_seconds=hold_seconds,
            )
        )
    return event.event_id


async def test_sweep_once_expires_every_lapsed_hold_a_batch_at_a_time(
    handlers: EventHandlers, store: Store, clock: FakeClock
) -> None:
    event_id = await hold_seats(handlers, count=7, hold_seconds=3)
    commits = store.commits
    clock.advance(3)
    assert await sweep_once(handlers, batch_size=3) == 7
    # Batches of 3, 3 and 1: one transaction each.
    assert store.commits - commits == 3
    assert all(r.status is ReservationStatus.EXPIRED for r in store.reservations.values())
    assert store.events[event_id].held_seats == 0


async def test_sweep_once_raises_what_the_database_raises(store: Store, clock: FakeClock) -> None:
    flaky = FlakyUnitOfWorks(store, failures=1)
    handlers = EventHandlers(flaky, clock=clock, default_hold=DEFAULT_HOLD)
    with pytest.raises(ConnectionRefusedError, match="database is restarting"):
        await sweep_once(handlers, batch_size=10)
    assert await sweep_once(handlers, batch_size=10) == 0


async def test_sweep_forever_keeps_going_after_failures(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    good = EventHandlers(lambda: FakeUnitOfWork(store), clock=clock, default_hold=DEFAULT_HOLD)
    event_id = await hold_seats(good, count=2, hold_seconds=1)
    clock.advance(1)
    flaky = FlakyUnitOfWorks(store, failures=3)
    handlers = EventHandlers(flaky, clock=clock, default_hold=DEFAULT_HOLD)
    with caplog.at_level(logging.INFO, logger="event_svc.service_layer.sweeper"):
        task = asyncio.create_task(sweep_forever(handlers, interval=0.01, batch_size=10))
        try:
            for _ in range(500):
                if not store.events[event_id].held_seats:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    failed = [
        r for r in caplog.records if r.getMessage().startswith("sweeping lapsed holds failed")
    ]
    assert [getattr(r, "failures", None) for r in failed] == [1, 2, 3]
    # Only the first failure of a streak carries its traceback.
    assert [bool(r.exc_info) for r in failed] == [True, False, False]
    assert "sweeping lapsed holds works again" in caplog.text
    assert flaky.calls > 3
    assert all(r.status is ReservationStatus.EXPIRED for r in store.reservations.values())
