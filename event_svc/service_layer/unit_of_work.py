"""The event service's unit of work."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from event_svc.adapters.repository import (
    EventRepository,
    ReservationRepository,
    SqlEventRepository,
    SqlReservationRepository,
)
from eventbooking.uow import SqlUnitOfWork
from eventbooking.uow import UnitOfWork as BaseUnitOfWork


class UnitOfWork(BaseUnitOfWork, Protocol):
    events: EventRepository
    reservations: ReservationRepository


class SqlEventUnitOfWork(SqlUnitOfWork):
    events: EventRepository
    reservations: ReservationRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.events = SqlEventRepository(conn)
        self.reservations = SqlReservationRepository(conn)
