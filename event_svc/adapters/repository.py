"""Repositories of the event database, and the seat moves that take one statement.

The repositories work over one connection in a transaction. The common
moves (hold seats for a new id, confirm or release a live hold) also exist
as single statements that commit on their own, so the event row, which every
reservation of the event updates, stays locked only while PostgreSQL runs
that statement, never across a round trip or a turn of the event loop.

Seats move only by single conditional UPDATEs of the event row, so no event
holds or sells more than its capacity whatever runs at once; the
reservation row is the point where Reserve, Confirm and Release with the
same id serialise, and every path takes it before the event row, so no two
of them wait on each other crosswise.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from event_svc.adapters.tables import events, reservations
from event_svc.domain.model import (
    TRANSITIONS,
    Event,
    Reservation,
    ReservationStatus,
    SeatChange,
)


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


@dataclass(frozen=True)
class SoldOut:
    """What a shortcut found instead of seats: a new id, and an event too full to hold it.

    Too full means fewer seats available than asked for, no more than the
    event's capacity asked for, and no lapsed hold whose expiry would free seats.
    """

    available: int


class SeatShortcuts(Protocol):
    """The common seat moves, each one statement committed on its own.

    None means the shortcut did not apply and changed nothing; the caller then
    takes the transactional way, which knows every other case.
    """

    async def hold_new(
        self,
        reservation_id: uuid.UUID,
        *,
        event_id: uuid.UUID,
        quantity: int,
        expires_at: datetime,
        now: datetime,
    ) -> Reservation | SoldOut | None: ...
    async def move_live_hold(
        self, reservation_id: uuid.UUID, status: ReservationStatus, *, now: datetime
    ) -> Reservation | None: ...


class NoShortcuts:
    """Takes no shortcut, so every move goes through the unit of work (as over in-memory fakes)."""

    async def hold_new(
        self,
        reservation_id: uuid.UUID,
        *,
        event_id: uuid.UUID,
        quantity: int,
        expires_at: datetime,
        now: datetime,
    ) -> Reservation | SoldOut | None:
        return None

    async def move_live_hold(
        self, reservation_id: uuid.UUID, status: ReservationStatus, *, now: datetime
    ) -> Reservation | None:
        return None


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


# One snapshot of the event, whether the id is taken and whether the event has lapsed holds.
# `held` inserts the reservation only for a new id and seats the snapshot shows; `taken`
# re-checks the seats on the newest event row, which it locks after the reservation row, as
# every other path does. If a concurrent taker got there first, `undone` inserts the id a second
# time, and the unique violation rolls the whole statement back. 'HELD' is written out so the
# planner can use the partial index of held reservations by event.
_HOLD_NEW = sa.text(
    """
    WITH event AS (
        SELECT event_id, capacity, price_cents,
               capacity - held_seats - sold_seats AS available,
               EXISTS (
                   SELECT FROM reservations WHERE reservation_id = :reservation_id
               ) AS id_taken,
               EXISTS (
                   SELECT FROM reservations
                   WHERE event_id = :event_id AND status = 'HELD' AND expires_at <= :now
               ) AS lapsed_holds
        FROM events
        WHERE event_id = :event_id
    ), held AS (
        INSERT INTO reservations (reservation_id, event_id, quantity, amount_cents, status,
                                  expires_at, created_at, updated_at)
        SELECT :reservation_id, event_id, :quantity, :quantity * price_cents, 'HELD',
               :expires_at, :now, :now
        FROM event
        WHERE available >= :quantity AND NOT id_taken
        RETURNING reservation_id, event_id, quantity, amount_cents, status, expires_at
    ), taken AS (
        UPDATE events SET held_seats = held_seats + held.quantity
        FROM held
        WHERE events.event_id = held.event_id
          AND capacity - held_seats - sold_seats >= held.quantity
        RETURNING events.event_id
    ), undone AS (
        INSERT INTO reservations (reservation_id, event_id, quantity, amount_cents, status,
                                  expires_at, created_at, updated_at)
        SELECT reservation_id, event_id, quantity, amount_cents, status, expires_at, :now, :now
        FROM held
        WHERE NOT EXISTS (SELECT FROM taken)
    )
    SELECT held.*, event.capacity, event.available, event.id_taken, event.lapsed_holds
    FROM event LEFT JOIN held ON true
    """
)

# A hold is live while its time is not up, the converse of `Reservation.lapsed`. The
# reservation row is locked first, then the event row, as every other path does.
_MOVE_LIVE_HOLD = sa.text(
    """
    WITH moved AS (
        UPDATE reservations SET status = :status, updated_at = :now
        WHERE reservation_id = :reservation_id AND status = 'HELD' AND expires_at > :now
        RETURNING reservation_id, event_id, quantity, amount_cents, status, expires_at
    ), seats AS (
        UPDATE events
        SET held_seats = held_seats + :held_per_seat * moved.quantity,
            sold_seats = sold_seats + :sold_per_seat * moved.quantity
        FROM moved
        WHERE events.event_id = moved.event_id
    )
    SELECT reservation_id, event_id, quantity, amount_cents, status, expires_at FROM moved
    """
)


class SqlSeatShortcuts:
    """The shortcuts as single statements, each on a pooled connection in autocommit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def hold_new(
        self,
        reservation_id: uuid.UUID,
        *,
        event_id: uuid.UUID,
        quantity: int,
        expires_at: datetime,
        now: datetime,
    ) -> Reservation | SoldOut | None:
        """Insert a HELD reservation and take its seats, or find the event sold out, or None.

        None when the event is missing, the id is taken (now or meanwhile), the
        quantity exceeds the capacity, lapsed holds might free seats, or the
        seats went between the snapshot and the lock.
        """
        params = {
            "reservation_id": reservation_id,
            "event_id": event_id,
            "quantity": quantity,
            "expires_at": expires_at,
            "now": now,
        }
        try:
            row = await self._one(_HOLD_NEW, params)
        except sa.exc.IntegrityError as exc:
            # The id was inserted meanwhile, or `undone` undid a hold whose seats went.
            if isinstance(exc.orig, psycopg.errors.UniqueViolation):
                return None
            raise
        if row is None:
            return None
        m = row._mapping
        if m["reservation_id"] is not None:
            return _reservation(row)
        # Only what the unit of work would refuse as sold out, with no lapsed hold to expire first.
        if m["id_taken"] or m["lapsed_holds"] or not m["available"] < quantity <= m["capacity"]:
            return None
        return SoldOut(available=m["available"])

    async def move_live_hold(
        self, reservation_id: uuid.UUID, status: ReservationStatus, *, now: datetime
    ) -> Reservation | None:
        """Move a HELD reservation whose time is not up to `status`, its seats with it."""
        per_seat = TRANSITIONS[(ReservationStatus.HELD, status)]
        params = {
            "reservation_id": reservation_id,
            "status": status.value,
            "held_per_seat": per_seat.held,
            "sold_per_seat": per_seat.sold,
            "now": now,
        }
        row = await self._one(_MOVE_LIVE_HOLD, params)
        return _reservation(row) if row else None

    async def _one(
        self, stmt: sa.TextClause, params: Mapping[str, object]
    ) -> sa.Row[tuple[object, ...]] | None:
        async with self._engine.connect() as conn:
            return (await conn.execute(stmt, params)).first()
