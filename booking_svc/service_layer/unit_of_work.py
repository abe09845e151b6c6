"""The booking service's unit of work."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from booking_svc.adapters.repository import SagaRepository, SqlSagaRepository
from eventbooking.uow import SqlUnitOfWork
from eventbooking.uow import UnitOfWork as BaseUnitOfWork


class UnitOfWork(BaseUnitOfWork, Protocol):
    sagas: SagaRepository


class SqlBookingUnitOfWork(SqlUnitOfWork):
    sagas: SagaRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.sagas = SqlSagaRepository(conn)
