"""The event service's unit of work."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from sqlalchemy.ext.asyncio import AsyncConnection

from event_svc.adapters.repository import (
    EventRepository,
    ReservationRepository,
    SqlEventRepository,
    SqlReservationRepository,
)
from eventbooking.uow import SqlUnitOfWork


class UnitOfWork(Protocol):
    events: EventRepository
    reservations: ReservationRepository

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def commit(self) -> None: ...


class SqlEventUnitOfWork(SqlUnitOfWork):
    events: EventRepository
    reservations: ReservationRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.events = SqlEventRepository(conn)
        self.reservations = SqlReservationRepository(conn)
