"""The saga repository: bookings, saga rows and the step log over one connection.

Every write to a running saga is one UPDATE guarded by owner and version:
a replica whose lease was taken over matches no row, gets LeaseLost and
writes nothing. Log rows are only ever inserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from booking_svc.adapters.tables import bookings, saga, saga_step_log
from booking_svc.domain.log import LogEntry
from booking_svc.domain.model import (
    Booking,
    LeaseLost,
    LogDetail,
    LogRecord,
    SagaInstance,
    Written,
)
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase
from eventbooking.errors import NotFound

# Only these may be claimed by recovery; the others are final or wait for an operator.
_LIVE = (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value)


class SagaRepository(Protocol):
    async def create_txn(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking: ...
    async def add_saga_txn(self, saga_instance: SagaInstance, first_entry: LogRecord) -> None: ...
    async def append_txn(
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
        now: datetime,
    ) -> Written: ...
    async def renew_leases(
        self, owner: str, saga_ids: Collection[uuid.UUID], *, until: datetime
    ) -> set[uuid.UUID]: ...
    async def release(self, owner: str, saga_ids: Collection[uuid.UUID]) -> None: ...
    async def claim(
        self,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        include_own: bool = False,
        exclude: Collection[uuid.UUID] = (),
    ) -> list[SagaInstance]: ...
    async def take_over_txn(
        self,
        saga_id: uuid.UUID,
        *,
        expected: SagaStatus,
        owner: str,
        lease_until: datetime,
        status: SagaStatus,
        note: str,
        entries: Sequence[LogRecord] = (),
        now: datetime,
    ) -> SagaInstance | None: ...
    async def load(self, saga_id: uuid.UUID) -> tuple[SagaInstance, list[LogEntry]]: ...
    async def get_saga(self, saga_id: uuid.UUID) -> SagaInstance | None: ...
    async def details(self, saga_id: uuid.UUID) -> list[LogDetail]: ...
    async def list_sagas(
        self,
        *,
        status: SagaStatus | None,
        kind: str | None,
        step: str | None,
        created_before: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[SagaInstance]: ...
    async def get_booking(self, booking_id: uuid.UUID) -> Booking | None: ...
    async def sagas_of(self, booking_id: uuid.UUID) -> list[SagaInstance]: ...
    async def oldest_live_start(self) -> datetime | None: ...
    async def page_bookings(
        self, account_id: uuid.UUID | None, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Booking]: ...
    async def set_booking_status_txn(
        self,
        booking_id: uuid.UUID,
        *,
        expected: BookingStatus,
        status: BookingStatus,
        now: datetime,
    ) -> Booking | None: ...
    async def request_cancel(self, booking_id: uuid.UUID) -> bool: ...


def _booking(row: sa.Row[Any]) -> Booking:
    m = row._mapping
    return Booking(
        booking_id=m["booking_id"],
        account_id=m["account_id"],
        event_id=m["event_id"],
        quantity=m["quantity"],
        amount_cents=m["amount_cents"],
        status=BookingStatus(m["status"]),
        failure_reason=m["failure_reason"],
        idempotency_key=m["idempotency_key"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _saga(row: sa.Row[Any]) -> SagaInstance:
    m = row._mapping
    return SagaInstance(
        saga_id=m["saga_id"],
        kind=m["kind"],
        booking_id=m["booking_id"],
        status=SagaStatus(m["status"]),
        current_step=m["current_step"],
        owner=m["owner"],
        lease_expires_at=m["lease_expires_at"],
        version=m["version"],
        trace_context=dict(m["trace_context"]),
        cancel_requested=m["cancel_requested"],
        note=m["note"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _entry(row: sa.Row[Any]) -> LogEntry:
    m = row._mapping
    return LogEntry(
        seq=m["seq"],
        saga_id=m["saga_id"],
        step=m["step"],
        phase=StepPhase(m["phase"]),
        event=StepEvent(m["event"]),
        attempt=m["attempt"],
        code=m["code"],
        message=m["message"],
        at=m["at"],
        trace_id=m["trace_id"],
        span_id=m["span_id"],
    )


def _detail(row: sa.Row[Any]) -> LogDetail:
    m = row._mapping
    return LogDetail(
        entry=_entry(row),
        request_summary=dict(m["request_summary"]),
        response_summary=dict(m["response_summary"]) if m["response_summary"] is not None else None,
        trace_id=m["trace_id"],
        span_id=m["span_id"],
        owner=m["owner"],
    )


def _log_values(saga_id: uuid.UUID, record: LogRecord, *, owner: str | None) -> dict[str, object]:
    return {
        "owner": owner,
        "saga_id": saga_id,
        "step": record.step,
        "phase": record.phase.value,
        "event": record.event.value,
        "attempt": record.attempt,
        "request_summary": record.request_summary,
        "response_summary": record.response_summary,
        "code": record.code,
        "message": record.message,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "at": record.at,
    }


class SqlSagaRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create_txn(
        self, booking: Booking, saga_instance: SagaInstance, first_entry: LogRecord
    ) -> Booking:
        """Insert booking, saga and first log row; with a used key, insert nothing.

        Returns the booking stored under (account_id, idempotency_key): the one
        given, or the earlier one when the key was used already (its booking_id differs).
        """
        stmt = (
            insert(bookings)
            .values(
                booking_id=booking.booking_id,
                account_id=booking.account_id,
                event_id=booking.event_id,
                quantity=booking.quantity,
                amount_cents=booking.amount_cents,
                status=booking.status.value,
                failure_reason=booking.failure_reason,
                idempotency_key=booking.idempotency_key,
                created_at=booking.created_at,
                updated_at=booking.updated_at,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "idempotency_key"])
            .returning(*bookings.c)
        )
        inserted = (await self._conn.execute(stmt)).first()
        if inserted is None:
            # ON CONFLICT waited for the first writer to commit, so this read sees its row.
            existing = (
                await self._conn.execute(
                    sa.select(bookings).where(
                        bookings.c.account_id == booking.account_id,
                        bookings.c.idempotency_key == booking.idempotency_key,
                    )
                )
            ).one()
            return _booking(existing)
        await self.add_saga_txn(saga_instance, first_entry)
        return _booking(inserted)

    async def add_saga_txn(self, saga_instance: SagaInstance, first_entry: LogRecord) -> None:
        """Insert a saga for an existing booking, with its first log row."""
        await self._conn.execute(
            sa.insert(saga).values(
                saga_id=saga_instance.saga_id,
                kind=saga_instance.kind,
                booking_id=saga_instance.booking_id,
                status=saga_instance.status.value,
                current_step=saga_instance.current_step,
                owner=saga_instance.owner,
                lease_expires_at=saga_instance.lease_expires_at,
                version=saga_instance.version,
                trace_context=saga_instance.trace_context,
                cancel_requested=saga_instance.cancel_requested,
                note=saga_instance.note,
                created_at=saga_instance.created_at,
                updated_at=saga_instance.updated_at,
            )
        )
        await self._conn.execute(
            sa.insert(saga_step_log).values(
                **_log_values(saga_instance.saga_id, first_entry, owner=saga_instance.owner)
            )
        )

    async def append_txn(
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
        now: datetime,
    ) -> Written:
        """One guarded transition: bump the saga's version, append `entries`, update the booking.

        Raises LeaseLost, having written nothing, unless `owner` holds the saga
        at `version`. Returns the new version and the saga's cancel flag, which
        others set without touching the version.
        """
        changes: dict[str, object] = {"updated_at": now}
        if status is not None:
            changes["status"] = status.value
        if current_step is not None:
            changes["current_step"] = current_step
        if lease_expires_at is not None:
            changes["lease_expires_at"] = lease_expires_at
        if note is not None:
            changes["note"] = note
        row = await self._guarded_update_txn(saga_id, owner=owner, version=version, **changes)
        if entries:
            await self._conn.execute(
                sa.insert(saga_step_log),
                [_log_values(saga_id, entry, owner=owner) for entry in entries],
            )
        booking_changes: dict[str, object] = {}
        if booking_status is not None:
            booking_changes["status"] = booking_status.value
        if booking_amount_cents is not None:
            booking_changes["amount_cents"] = booking_amount_cents
        if failure_reason is not None:
            booking_changes["failure_reason"] = failure_reason
        if booking_changes:
            await self._conn.execute(
                sa.update(bookings)
                .where(bookings.c.booking_id == row.booking_id)
                .values(updated_at=now, **booking_changes)
            )
        return Written(version=row.version, cancel_requested=row.cancel_requested)

    async def renew_leases(
        self, owner: str, saga_ids: Collection[uuid.UUID], *, until: datetime
    ) -> set[uuid.UUID]:
        """Extend the leases `owner` still holds among `saga_ids`; return those ids.

        The version is left alone: a renewal changes no step, and the engine's
        next guarded write must still match.
        """
        if not saga_ids:
            return set()
        # Locked in id order, as the journal locks a batch, so the two never deadlock.
        held = (
            sa.select(saga.c.saga_id)
            .where(saga.c.saga_id.in_(list(saga_ids)), saga.c.owner == owner)
            .order_by(saga.c.saga_id)
            .with_for_update()
            .scalar_subquery()
        )
        stmt = (
            sa.update(saga)
            .where(saga.c.saga_id.in_(held), saga.c.owner == owner)
            .values(lease_expires_at=until)
            .returning(saga.c.saga_id)
        )
        return set((await self._conn.execute(stmt)).scalars())

    async def release(self, owner: str, saga_ids: Collection[uuid.UUID]) -> None:
        """Let others claim `saga_ids` at once: a process stopping cleanly says it is gone."""
        if not saga_ids:
            return
        await self._conn.execute(
            sa.update(saga)
            .where(saga.c.saga_id.in_(list(saga_ids)), saga.c.owner == owner)
            .values(lease_expires_at=None)
        )

    async def _guarded_update_txn(
        self, saga_id: uuid.UUID, *, owner: str, version: int, **changes: object
    ) -> sa.Row[Any]:
        stmt = (
            sa.update(saga)
            .where(saga.c.saga_id == saga_id, saga.c.owner == owner, saga.c.version == version)
            .values(version=saga.c.version + 1, **changes)
            .returning(saga.c.version, saga.c.booking_id, saga.c.cancel_requested)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise LeaseLost(f"saga {saga_id} is no longer held by {owner} at version {version}")
        return row

    async def claim(
        self,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        include_own: bool = False,
        exclude: Collection[uuid.UUID] = (),
    ) -> list[SagaInstance]:
        """Take up to `limit` live sagas whose lease ran out, leased to `owner` until `lease_until`.

        With `include_own`, sagas `owner` already holds are taken back at once:
        a restarted process knows its earlier self is gone. Rows another
        claimer has locked are skipped, so two claimers never share a saga.
        `exclude` names sagas the caller is running already.
        """
        free = sa.or_(saga.c.lease_expires_at.is_(None), saga.c.lease_expires_at <= now)
        if include_own:
            free = sa.or_(free, saga.c.owner == owner)
        conditions = [saga.c.status.in_(_LIVE), free]
        if exclude:
            conditions.append(saga.c.saga_id.not_in(list(exclude)))
        candidates = (
            sa.select(saga.c.saga_id)
            .where(*conditions)
            .order_by(saga.c.lease_expires_at.nulls_first(), saga.c.saga_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            sa.update(saga)
            .where(saga.c.saga_id.in_(candidates))
            .values(owner=owner, lease_expires_at=lease_until, version=saga.c.version + 1)
            .returning(*saga.c)
        )
        claimed = [_saga(row) for row in await self._conn.execute(stmt)]
        return sorted(claimed, key=lambda s: (s.created_at, s.saga_id))

    async def load(self, saga_id: uuid.UUID) -> tuple[SagaInstance, list[LogEntry]]:
        """The saga row and its whole log in seq order; NotFound if there is no such saga."""
        row = (await self._conn.execute(sa.select(saga).where(saga.c.saga_id == saga_id))).first()
        if row is None:
            raise NotFound(f"saga {saga_id} does not exist")
        entries = await self._conn.execute(
            sa.select(saga_step_log)
            .where(saga_step_log.c.saga_id == saga_id)
            .order_by(saga_step_log.c.seq)
        )
        return _saga(row), [_entry(entry) for entry in entries]

    async def get_booking(self, booking_id: uuid.UUID) -> Booking | None:
        row = (
            await self._conn.execute(sa.select(bookings).where(bookings.c.booking_id == booking_id))
        ).first()
        return _booking(row) if row else None

    async def oldest_live_start(self) -> datetime | None:
        """When the oldest saga still RUNNING or COMPENSATING started; None when there is none."""
        stmt = sa.select(sa.func.min(saga.c.created_at)).where(saga.c.status.in_(_LIVE))
        oldest: datetime | None = (await self._conn.execute(stmt)).scalar()
        return oldest

    async def sagas_of(self, booking_id: uuid.UUID) -> list[SagaInstance]:
        """Every saga of a booking, oldest first: its booking saga, then any cancel saga."""
        rows = await self._conn.execute(
            sa.select(saga)
            .where(saga.c.booking_id == booking_id)
            .order_by(saga.c.created_at, saga.c.saga_id)
        )
        return [_saga(row) for row in rows]

    async def page_bookings(
        self, account_id: uuid.UUID | None, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Booking]:
        """An account's bookings (every account's for None), newest first, after the
        (created_at, booking_id) cursor."""
        query = (
            sa.select(bookings)
            .order_by(bookings.c.created_at.desc(), bookings.c.booking_id.desc())
            .limit(limit)
        )
        if account_id is not None:
            query = query.where(bookings.c.account_id == account_id)
        if after is not None:
            query = query.where(
                sa.tuple_(bookings.c.created_at, bookings.c.booking_id) < sa.tuple_(*after)
            )
        return [_booking(row) for row in await self._conn.execute(query)]

    async def set_booking_status_txn(
        self,
        booking_id: uuid.UUID,
        *,
        expected: BookingStatus,
        status: BookingStatus,
        now: datetime,
    ) -> Booking | None:
        """Move the booking from `expected` to `status`; None, changing nothing, if it was not there."""
        stmt = (
            sa.update(bookings)
            .where(bookings.c.booking_id == booking_id, bookings.c.status == expected.value)
            .values(status=status.value, updated_at=now)
            .returning(*bookings.c)
        )
        row = (await self._conn.execute(stmt)).first()
        return _booking(row) if row else None

    async def take_over_txn(
        self,
        saga_id: uuid.UUID,
        *,
        expected: SagaStatus,
        owner: str,
        lease_until: datetime,
        status: SagaStatus,
        note: str,
        entries: Sequence[LogRecord] = (),
        now: datetime,
    ) -> SagaInstance | None:
        """An operator's move: a saga in `expected` goes to `status`, leased to `owner`.

        None, changing nothing, when the saga is not in `expected` (any more).
        """
        stmt = (
            sa.update(saga)
            .where(saga.c.saga_id == saga_id, saga.c.status == expected.value)
            .values(
                status=status.value,
                owner=owner,
                lease_expires_at=lease_until,
                note=note,
                updated_at=now,
                version=saga.c.version + 1,
            )
            .returning(*saga.c)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            return None
        if entries:
            await self._conn.execute(
                sa.insert(saga_step_log),
                [_log_values(saga_id, entry, owner=owner) for entry in entries],
            )
        return _saga(row)

    async def get_saga(self, saga_id: uuid.UUID) -> SagaInstance | None:
        row = (await self._conn.execute(sa.select(saga).where(saga.c.saga_id == saga_id))).first()
        return _saga(row) if row else None

    async def details(self, saga_id: uuid.UUID) -> list[LogDetail]:
        """Every log row of a saga in seq order, with summaries, trace ids and writers."""
        rows = await self._conn.execute(
            sa.select(saga_step_log)
            .where(saga_step_log.c.saga_id == saga_id)
            .order_by(saga_step_log.c.seq)
        )
        return [_detail(row) for row in rows]

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None,
        kind: str | None,
        step: str | None,
        created_before: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[SagaInstance]:
        """Sagas oldest first, after the (created_at, saga_id) cursor, matching every filter given."""
        query = sa.select(saga).order_by(saga.c.created_at, saga.c.saga_id).limit(limit)
        if status is not None:
            query = query.where(saga.c.status == status.value)
        if kind:
            query = query.where(saga.c.kind == kind)
        if step:
            query = query.where(saga.c.current_step == step)
        if created_before is not None:
            query = query.where(saga.c.created_at <= created_before)
        if after is not None:
            query = query.where(sa.tuple_(saga.c.created_at, saga.c.saga_id) > sa.tuple_(*after))
        return [_saga(row) for row in await self._conn.execute(query)]

    async def request_cancel(self, booking_id: uuid.UUID) -> bool:
        """Flag the booking's unfinished booking saga to compensate; False if there is none.

        The version is left alone on purpose: the flag comes from outside the
        owner, and bumping it would make the owner's next write lose its lease.
        """
        stmt = (
            sa.update(saga)
            .where(
                saga.c.booking_id == booking_id,
                saga.c.kind == "booking",
                saga.c.status.in_([*_LIVE, SagaStatus.STUCK.value]),
            )
            .values(cancel_requested=True)
            .returning(saga.c.saga_id)
        )
        return (await self._conn.execute(stmt)).first() is not None
