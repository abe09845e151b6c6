"""The booking service's unit of work, and the journal the saga engine writes through."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from booking_svc.adapters.repository import SagaRepository, SqlSagaRepository
from booking_svc.domain.model import Booking, LogRecord, SagaInstance, Written
from booking_svc.domain.states import BookingStatus, SagaStatus
from eventbooking.uow import SqlUnitOfWork
from eventbooking.uow import UnitOfWork as BaseUnitOfWork


class UnitOfWork(BaseUnitOfWork, Protocol):
    sagas: SagaRepository


class SqlBookingUnitOfWork(SqlUnitOfWork):
    sagas: SagaRepository

    def _bind(self, conn: AsyncConnection) -> None:
        self.sagas = SqlSagaRepository(conn)


class Journal(Protocol):
    """The writes on a saga's hot path, each atomic on its own: no unit of work around them.

    A booking saga makes one `create` and one `append` per participant reply,
    so these two decide how much durability costs (docs/performance.md).
    """

    async def create(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking:
        """Booking, saga and first log row, or, when the idempotency key was used, the
        booking stored under it (its booking_id differs) and nothing written."""
        ...

    async def append(
        self,
        saga_id: uuid.UUID,
        *,
        owner: str,
        version: int,
        entries: Sequence[LogRecord] = (),
        status: SagaStatus | None = None,
        current_step: str | None = None,
        lease_expires_at: datetime | None = None,
        note: str | None = None,
        booking_status: BookingStatus | None = None,
        booking_amount_cents: int | None = None,
        failure_reason: str | None = None,
        unless_cancelled: bool = False,
        now: datetime,
    ) -> Written:
        """One guarded transition, as SagaRepository.append_txn.

        Raises LeaseLost, having written nothing, unless `owner` holds the saga
        at `version`. With `unless_cancelled`, a saga whose cancel flag is set
        is left as it is too, and the answer is its unchanged version with
        `cancel_requested` true, so the caller can plan again.
        """
        ...


class UowJournal:
    """The journal as transactions of a unit of work: one per write, same meaning.

    Any unit of work will do (the fakes of the unit tests, or SQLAlchemy);
    the service itself writes through the faster PgJournal.
    """

    def __init__(self, uow: Callable[[], UnitOfWork]) -> None:
        self._uow = uow

    async def create(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking:
        async with self._uow() as uow:
            stored = await uow.sagas.create_txn(booking, saga_instance, first_entry)
            await uow.commit()
        return stored

    async def append(
        self,
        saga_id: uuid.UUID,
        *,
        owner: str,
        version: int,
        entries: Sequence[LogRecord] = (),
        status: SagaStatus | None = None,
        current_step: str | None = None,
        lease_expires_at: datetime | None = None,
        note: str | None = None,
        booking_status: BookingStatus | None = None,
        booking_amount_cents: int | None = None,
        failure_reason: str | None = None,
        unless_cancelled: bool = False,
        now: datetime,
    ) -> Written:
        async with self._uow() as uow:
            written = await uow.sagas.append_txn(
                saga_id,
                owner=owner,
                version=version,
                entries=entries,
                status=status,
                current_step=current_step,
                lease_expires_at=lease_expires_at,
                note=note,
                booking_status=booking_status,
                booking_amount_cents=booking_amount_cents,
                failure_reason=failure_reason,
                now=now,
            )
            if unless_cancelled and written.cancel_requested:
                # Leaving without commit rolls the transition back.
                return Written(version=version, cancel_requested=True)
            await uow.commit()
        return written
