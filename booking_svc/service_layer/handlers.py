"""What the booking service does, one handler per use case.

Creating a booking writes the booking, its saga row and the saga's first
log row in one transaction and hands the saga to the engine; waiting for an
outcome listens for the engine's changes and re-reads the database, so a
saga finished by another replica is seen too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from booking_svc.domain import commands
from booking_svc.domain.log import OPERATOR, read_log
from booking_svc.domain.model import Booking, LogDetail, LogRecord, SagaInstance
from booking_svc.domain.planner import RunAction, can_compensate, resume_status
from booking_svc.domain.states import (
    SETTLED,
    BookingStatus,
    SagaStatus,
    StepEvent,
    StepPhase,
)
from booking_svc.service_layer.changes import BookingChanges
from booking_svc.service_layer.engine import Run, SagaEngine
from booking_svc.service_layer.limits import BookingRateLimit
from booking_svc.service_layer.unit_of_work import UnitOfWork
from eventbooking import telemetry
from eventbooking.clock import Clock
from eventbooking.errors import AlreadyExists, FailedPrecondition, NotFound
from eventbooking.paging import split_page

# What a CancelBooking waits for: the booking undone, or failed before the cancel took hold.
CANCEL_OUTCOMES = frozenset({BookingStatus.CANCELLED, BookingStatus.FAILED})


@dataclass(frozen=True)
class BookingPage:
    bookings: list[Booking]
    next_after: tuple[datetime, uuid.UUID] | None


@dataclass(frozen=True)
class SagaPage:
    sagas: list[SagaInstance]
    next_after: tuple[datetime, uuid.UUID] | None


@dataclass(frozen=True)
class History:
    """Every log row of a booking's sagas (booking saga, then any cancel saga), and the booking saga."""

    saga: SagaInstance
    rows: list[tuple[uuid.UUID, LogDetail]]


class BookingHandlers:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        engine: SagaEngine,
        changes: BookingChanges,
        *,
        clock: Clock,
        rate_limit: BookingRateLimit,
        poll_interval: float = 0.5,
    ) -> None:
        self._uow = uow
        self._engine = engine
        self._changes = changes
        self._clock = clock
        self._rate_limit = rate_limit
        self._poll_interval = poll_interval

    async def create_booking(
        self,
        cmd: commands.CreateBooking,
        *,
        wait: float | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> Booking:
        """Start a booking saga, or find the booking the idempotency key made before.

        With `wait`, return once the booking is CONFIRMED or FAILED, or when
        `wait` seconds have passed, whichever comes first. Every attempt counts
        against the account's rate limit, a repeated key too.
        """
        # Before any database work, so a flood of attempts costs the database nothing.
        self._rate_limit.take(cmd.account_id)
        now = self._clock()
        booking = Booking(
            booking_id=uuid.uuid4(),
            account_id=cmd.account_id,
            event_id=cmd.event_id,
            quantity=cmd.quantity,
            status=BookingStatus.PENDING,
            idempotency_key=cmd.idempotency_key,
            created_at=now,
            updated_at=now,
        )
        definition = self._engine.definition("booking")
        first_step = definition.steps[0]
        saga = SagaInstance(
            saga_id=uuid.uuid4(),
            kind=definition.kind,
            booking_id=booking.booking_id,
            status=SagaStatus.RUNNING,
            current_step=first_step.name,
            owner=self._engine.owner,
            lease_expires_at=now + self._engine.lease,
            # The request's own span when tracing is on, else what the caller sent.
            trace_context=telemetry.inject() or trace_context or {},
            created_at=now,
            updated_at=now,
        )
        run = Run(definition, saga, booking, saga.saga_id, entries=[])
        move = RunAction(first_step, 1)
        first = self._engine.first_row(run, move, at=now)
        stored = await self._engine.journal.create(booking, saga, first)
        if stored.booking_id == booking.booking_id:
            run.record(first)
            self._engine.launch(run, move)
        elif (stored.event_id, stored.quantity) != (cmd.event_id, cmd.quantity):
            raise AlreadyExists(
                f"idempotency_key {cmd.idempotency_key!r} was used for booking "
                f"{stored.booking_id} ({stored.quantity} seats of event {stored.event_id}); "
                "use a new key for a different booking"
            )
        if wait is None:
            return stored
        launched = run.saga_id if stored.booking_id == booking.booking_id else None
        return await self.wait_for(
            stored.booking_id, SETTLED, within=wait, current=stored, saga_id=launched
        )

    async def get_booking(self, booking_id: uuid.UUID) -> Booking:
        async with self._uow() as uow:
            booking = await uow.sagas.get_booking(booking_id)
        if booking is None:
            raise NotFound(f"booking {booking_id} does not exist")
        return booking

    async def list_bookings(self, cmd: commands.ListBookings) -> BookingPage:
        async with self._uow() as uow:
            rows = await uow.sagas.page_bookings(
                cmd.account_id, after=cmd.after, limit=cmd.page_size + 1
            )
        page, next_after = split_page(
            rows, cmd.page_size, position=lambda b: (b.created_at, b.booking_id)
        )
        return BookingPage(bookings=page, next_after=next_after)

    async def cancel_booking(self, booking_id: uuid.UUID, *, wait: float | None = None) -> Booking:
        """Cancel: a PENDING booking's saga compensates, a CONFIRMED one runs the cancel saga.

        Cancelling a booking that is cancelling or cancelled already changes
        nothing; a FAILED booking has nothing to cancel.
        """
        booking = await self._request_cancel(booking_id)
        if wait is None:
            return booking
        return await self.wait_for(booking_id, CANCEL_OUTCOMES, within=wait, current=booking)

    async def _request_cancel(self, booking_id: uuid.UUID) -> Booking:
        # The saga moves the booking too; each turn that loses that race reads it again.
        while True:
            now = self._clock()
            async with self._uow() as uow:
                booking = await uow.sagas.get_booking(booking_id)
                if booking is None:
                    raise NotFound(f"booking {booking_id} does not exist")
                if booking.status in (BookingStatus.CANCELLING, BookingStatus.CANCELLED):
                    return booking
                if booking.status is BookingStatus.FAILED:
                    raise FailedPrecondition(
                        f"booking {booking_id} failed ({booking.failure_reason}); "
                        "there is nothing to cancel"
                    )
                if booking.status is BookingStatus.PENDING:
                    # The saga row first, as the engine locks it, so the two never deadlock.
                    await uow.sagas.request_cancel(booking_id)
                    moved = await uow.sagas.set_booking_status_txn(
                        booking_id,
                        expected=BookingStatus.PENDING,
                        status=BookingStatus.CANCELLING,
                        now=now,
                    )
                    if moved is None:
                        continue
                    await uow.commit()
                    self._changes.publish(moved)
                    return moved
                moved = await uow.sagas.set_booking_status_txn(
                    booking_id,
                    expected=BookingStatus.CONFIRMED,
                    status=BookingStatus.CANCELLING,
                    now=now,
                )
                if moved is None:
                    continue
                booking_saga = next(
                    s for s in await uow.sagas.sagas_of(booking_id) if s.kind == "booking"
                )
                run, move, first = self._engine.new_cancel_saga(
                    moved, booking_saga_id=booking_saga.saga_id, now=now
                )
                await uow.sagas.add_saga_txn(run.saga, first)
                await uow.commit()
            self._engine.launch(run, move)
            self._changes.publish(moved)
            return moved

    async def wait_for(
        self,
        booking_id: uuid.UUID,
        targets: Collection[BookingStatus],
        *,
        within: float,
        current: Booking | None = None,
        saga_id: uuid.UUID | None = None,
    ) -> Booking:
        """The booking once its status is in `targets`, or as it is after `within` seconds.

        `saga_id` names a saga that this process runs for the booking: while it
        runs here, every change it makes is published, so the database is not
        read again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        with self._changes.subscribe(booking_id) as changes:
            booking = current or await self.get_booking(booking_id)
            while booking.status not in targets:
                left = deadline - loop.time()
                if left <= 0:
                    break
                latest = await changes.next(min(left, self._poll_interval))
                if latest is None and saga_id is not None and self._engine.is_running(saga_id):
                    continue
                booking = latest or await self.get_booking(booking_id)
        return booking

    async def watch(self, booking_id: uuid.UUID) -> AsyncIterator[Booking]:
        """The booking now and at each change, ending once it is settled."""
        with self._changes.subscribe(booking_id) as changes:
            booking = await self.get_booking(booking_id)
            yield booking
            while booking.status not in SETTLED:
                latest = await changes.next(self._poll_interval)
                fresh = latest or await self.get_booking(booking_id)
                if (fresh.status, fresh.updated_at) != (booking.status, booking.updated_at):
                    yield fresh
                booking = fresh

    async def history(self, booking_id: uuid.UUID) -> History:
        async with self._uow() as uow:
            sagas = await uow.sagas.sagas_of(booking_id)
            if not sagas:
                raise NotFound(f"booking {booking_id} does not exist")
            rows = [
                (s.saga_id, detail) for s in sagas for detail in await uow.sagas.details(s.saga_id)
            ]
        rows.sort(key=lambda row: row[1].entry.seq)
        return History(saga=sagas[0], rows=rows)

    # Operators.

    async def list_sagas(self, cmd: commands.ListSagas) -> SagaPage:
        created_before = None
        if cmd.min_age_seconds:
            created_before = self._clock() - timedelta(seconds=cmd.min_age_seconds)
        async with self._uow() as uow:
            rows = await uow.sagas.list_sagas(
                status=cmd.status,
                kind=cmd.kind,
                step=cmd.step,
                created_before=created_before,
                after=cmd.after,
                limit=cmd.page_size + 1,
            )
        page, next_after = split_page(
            rows, cmd.page_size, position=lambda s: (s.created_at, s.saga_id)
        )
        return SagaPage(sagas=page, next_after=next_after)

    async def get_saga(self, saga_id: uuid.UUID) -> tuple[SagaInstance, list[LogDetail]]:
        async with self._uow() as uow:
            saga = await uow.sagas.get_saga(saga_id)
            if saga is None:
                raise NotFound(f"saga {saga_id} does not exist")
            return saga, await uow.sagas.details(saga_id)

    async def retry_saga(self, saga_id: uuid.UUID) -> SagaInstance:
        """Resume a STUCK saga in the direction its log was going, here and now."""
        return await self._repair(saga_id, compensate=False)

    async def compensate_saga(self, saga_id: uuid.UUID) -> SagaInstance:
        """Undo a STUCK saga that has not passed its pivot."""
        return await self._repair(saga_id, compensate=True)

    async def _repair(self, saga_id: uuid.UUID, *, compensate: bool) -> SagaInstance:
        now = self._clock()
        async with self._uow() as uow:
            saga = await uow.sagas.get_saga(saga_id)
            if saga is None:
                raise NotFound(f"saga {saga_id} does not exist")
            if saga.status is not SagaStatus.STUCK:
                raise FailedPrecondition(
                    f"saga {saga_id} is {saga.status.value}; only a STUCK saga can be repaired"
                )
            _, entries = await uow.sagas.load(saga_id)
            definition = self._engine.definition(saga.kind)
            if compensate and not can_compensate(definition, entries):
                raise FailedPrecondition(
                    f"saga {saga_id} has passed its pivot and can only go forward; retry it instead"
                )
            target = SagaStatus.COMPENSATING if compensate else resume_status(entries)
            # Every track left unfinished (refused, gave up, or cut off by errors) gets an
            # operator row, which also restarts its give-up clock.
            progress = read_log(definition, entries)
            phase = (
                StepPhase.COMPENSATION if target is SagaStatus.COMPENSATING else StepPhase.ACTION
            )
            tracks = progress.compensations if phase is StepPhase.COMPENSATION else progress.actions
            reopen = [
                LogRecord(
                    step=step.name,
                    phase=phase,
                    event=StepEvent.RETRYING,
                    attempt=track.attempts,
                    code=OPERATOR,
                    message="an operator asked to " + ("compensate" if compensate else "retry"),
                    at=now,
                )
                for step, track in zip(definition.steps, tracks, strict=True)
                if track.started and not track.succeeded
            ]
            action = "compensate" if compensate else "retry"
            taken = await uow.sagas.take_over_txn(
                saga_id,
                expected=SagaStatus.STUCK,
                owner=self._engine.owner,
                lease_until=now + self._engine.lease,
                status=target,
                note=f"an operator asked to {action} at {now.isoformat()}; was: {saga.note}",
                entries=reopen,
                now=now,
            )
            if taken is None:
                raise FailedPrecondition(f"saga {saga_id} changed meanwhile; look at it again")
            await uow.commit()
        self._engine.resume(saga_id)
        return taken
