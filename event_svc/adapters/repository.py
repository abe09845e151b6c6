"""Repositories of the event database over one connection in a transaction.

Seats move only by single conditional UPDATEs of the event row, so no event
holds or sells more than its capacity whatever runs at once; the
reservation row is the point where Reserve, Confirm and Release with the
same id serialise.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from event_svc.adapters.tables import events, reservations
from event_svc.domain.model import Event, Reservation, ReservationStatus, SeatChange


class EventRepository(Protocol):
    async def add(self, event: Event) -> None: ...
    async def get(self, event_id: uuid.UUID) -> Event | None: ...
    async def page(
        self, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Event]: ...
    async def take_seats(self, event_id: uuid.UUID, quantity: int) -> Event | None: ...
    async def move_seats(self, event_id: uuid.UUID, change: SeatChange) -> None: ...


class ReservationRepository(Protocol):
    async def claim(self, reservation: Reservation, *, now: datetime) -> bool: ...
    async def lock(self, reservation_id: uuid.UUID) -> Reservation | None: ...
    async def lock_lapsed(
        self, now: datetime, *, limit: int, event_id: uuid.UUID | None = None
    ) -> list[Reservation]: ...
    async def set_status(
        self, reservation_ids: Sequence[uuid.UUID], status: ReservationStatus, *, now: datetime
    ) -> None: ...


def _utc(value: datetime | None) -> datetime | None:
    # psycopg gives timestamptz in the session's time zone; the service speaks UTC.
    return value.astimezone(UTC) if value is not None else None


def _event(row: sa.Row[tuple[object, ...]]) -> Event:
    m = row._mapping
    return Event(
        event_id=m["event_id"],
        name=m["name"],
        venue=m["venue"],
        starts_at=m["starts_at"].astimezone(UTC),
        capacity=m["capacity"],
        price_cents=m["price_cents"],
        held_seats=m["held_seats"],
        sold_seats=m["sold_seats"],
        created_at=m["created_at"].astimezone(UTC),
    )


def _reservation(row: sa.Row[tuple[object, ...]]) -> Reservation:
    m = row._mapping
    return Reservation(
        reservation_id=m["reservation_id"],
        event_id=m["event_id"],
        quantity=m["quantity"],
        amount_cents=m["amount_cents"],
        status=ReservationStatus(m["status"]),
        expires_at=_utc(m["expires_at"]),
    )


class SqlEventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, event: Event) -> None:
        await self._conn.execute(
            sa.insert(events).values(
                event_id=event.event_id,
                name=event.name,
                venue=event.venue,
                starts_at=event.starts_at,
                capacity=event.capacity,
                price_cents=event.price_cents,
                held_seats=event.held_seats,
                sold_seats=event.sold_seats,
                created_at=event.created_at,
            )
        )

    async def get(self, event_id: uuid.UUID) -> Event | None:
        row = (
            await self._conn.execute(sa.select(events).where(events.c.event_id == event_id))
        ).first()
        return _event(row) if row else None

    async def page(self, *, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Event]:
        query = sa.select(events).order_by(events.c.starts_at, events.c.event_id).limit(limit)
        if after is not None:
            query = query.where(
                sa.tuple_(events.c.starts_at, events.c.event_id) > sa.tuple_(*after)
            )
        return [_event(row) for row in await self._conn.execute(query)]

    async def take_seats(self, event_id: uuid.UUID, quantity: int) -> Event | None:
        """Hold `quantity` more seats; None if the event is missing or has fewer available."""
        stmt = (
            sa.update(events)
            .where(events.c.event_id == event_id)
            # Re-checked on the newest row version after waiting for a concurrent taker.
            .where(events.c.capacity - events.c.held_seats - events.c.sold_seats >= quantity)
            .values(held_seats=events.c.held_seats + quantity)
            .returning(*events.c)
        )
        row = (await self._conn.execute(stmt)).first()
        return _event(row) if row else None

    async def move_seats(self, event_id: uuid.UUID, change: SeatChange) -> None:
        """Apply a transition's seat change; the table's CHECKs refuse any impossible count."""
        await self._conn.execute(
            sa.update(events)
            .where(events.c.event_id == event_id)
            .values(
                held_seats=events.c.held_seats + change.held,
                sold_seats=events.c.sold_seats + change.sold,
            )
        )


class SqlReservationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(self, reservation: Reservation, *, now: datetime) -> bool:
        """Insert the reservation; False when its id exists (then waits for its writer to finish)."""
        stmt = (
            insert(reservations)
            .values(
                reservation_id=reservation.reservation_id,
                event_id=reservation.event_id,
                quantity=reservation.quantity,
                amount_cents=reservation.amount_cents,
                status=reservation.status.value,
                expires_at=reservation.expires_at,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["reservation_id"])
            .returning(reservations.c.reservation_id)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def lock(self, reservation_id: uuid.UUID) -> Reservation | None:
        row = (
            await self._conn.execute(
                sa.select(reservations)
                .where(reservations.c.reservation_id == reservation_id)
                .with_for_update()
            )
        ).first()
        return _reservation(row) if row else None

    async def lock_lapsed(
        self, now: datetime, *, limit: int, event_id: uuid.UUID | None = None
    ) -> list[Reservation]:
        """Lock up to `limit` holds past their time, skipping any another transaction has."""
        query = (
            sa.select(reservations)
            .where(reservations.c.status == ReservationStatus.HELD.value)
            .where(reservations.c.expires_at <= now)
            .order_by(reservations.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if event_id is not None:
            query = query.where(reservations.c.event_id == event_id)
        return [_reservation(row) for row in await self._conn.execute(query)]

    async def set_status(
        self, reservation_ids: Sequence[uuid.UUID], status: ReservationStatus, *, now: datetime
    ) -> None:
        await self._conn.execute(
            sa.update(reservations)
            .where(reservations.c.reservation_id.in_(reservation_ids))
            .values(status=status.value, updated_at=now)
        )
