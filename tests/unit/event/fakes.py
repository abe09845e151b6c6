"""In-memory repositories and unit of work for the event handlers, and a clock tests move.

The fake unit of work keeps the real one's promise: nothing survives unless
committed, so a refused request leaves the store as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from event_svc.adapters.repository import EventRepository, ReservationRepository
from event_svc.domain.model import Event, Reservation, ReservationStatus, SeatChange


@dataclass
class Store:
    """What a fake database holds; units of work share one."""

    events: dict[uuid.UUID, Event] = field(default_factory=dict)
    reservations: dict[uuid.UUID, Reservation] = field(default_factory=dict)
    commits: int = 0

    def snapshot(self) -> tuple[dict[uuid.UUID, Event], dict[uuid.UUID, Reservation]]:
        return dict(self.events), dict(self.reservations)


class FakeEventRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, event: Event) -> None:
        assert event.event_id not in self._store.events
        self._store.events[event.event_id] = event

    async def get(self, event_id: uuid.UUID) -> Event | None:
        return self._store.events.get(event_id)

    async def page(self, *, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Event]:
        ordered = sorted(self._store.events.values(), key=lambda e: (e.starts_at, e.event_id))
        if after is not None:
            ordered = [e for e in ordered if (e.starts_at, e.event_id) > after]
        return ordered[:limit]

    async def take_seats(self, event_id: uuid.UUID, quantity: int) -> Event | None:
        event = self._store.events.get(event_id)
        if event is None or event.available_seats < quantity:
            return None
        taken = replace(event, held_seats=event.held_seats + quantity)
        self._store.events[event_id] = taken
        return taken

    async def move_seats(self, event_id: uuid.UUID, change: SeatChange) -> None:
        event = self._store.events[event_id]
        moved = replace(
            event,
            held_seats=event.held_seats + change.held,
            sold_seats=event.sold_seats + change.sold,
        )
        # The same limits the database's CHECK constraints enforce.
        assert moved.held_seats >= 0
        assert moved.sold_seats >= 0
        assert moved.held_seats + moved.sold_seats <= moved.capacity
        self._store.events[event_id] = moved


class FakeReservationRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def claim(self, reservation: Reservation, *, now: datetime) -> bool:
        if reservation.reservation_id in self._store.reservations:
            return False
        self._store.reservations[reservation.reservation_id] = reservation
        return True

    async def lock(self, reservation_id: uuid.UUID) -> Reservation | None:
        return self._store.reservations.get(reservation_id)

    async def lock_lapsed(
        self, now: datetime, *, limit: int, event_id: uuid.UUID | None = None
    ) -> list[Reservation]:
        lapsed = [
            r
            for r in self._store.reservations.values()
            if r.lapsed(now) and (event_id is None or r.event_id == event_id)
        ]
        return sorted(lapsed, key=lambda r: r.expires_at or now)[:limit]

    async def set_status(
        self, reservation_ids: Sequence[uuid.UUID], status: ReservationStatus, *, now: datetime
    ) -> None:
        for reservation_id in reservation_ids:
            reservation = self._store.reservations[reservation_id]
            self._store.reservations[reservation_id] = replace(reservation, status=status)


class FakeUnitOfWork:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._saved: tuple[dict[uuid.UUID, Event], dict[uuid.UUID, Reservation]] | None = None
        self.events: EventRepository = FakeEventRepository(store)
        self.reservations: ReservationRepository = FakeReservationRepository(store)

    async def __aenter__(self) -> Self:
        self._saved = self._store.snapshot()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            self._store.events, self._store.reservations = self._saved
        self._saved = None

    async def commit(self) -> None:
        assert self._saved is not None, "commit outside `async with`"
        self._saved = None
        self._store.commits += 1


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
