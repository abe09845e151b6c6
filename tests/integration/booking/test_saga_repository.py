"""The saga repository on a real PostgreSQL: idempotent creation, guarded writes, claims."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_svc.domain.log import read_log
from booking_svc.domain.model import Booking, LeaseLost, LogRecord, SagaInstance
from booking_svc.domain.saga import BOOKING_SAGA, CHARGE_STEP, RESERVE_STEP
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase
from booking_svc.service_layer.unit_of_work import SqlBookingUnitOfWork

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OWNER = "replica-a"


def now() -> datetime:
    return datetime.now(UTC)


def record(step: str, event: StepEvent, *, attempt: int = 1, code: str = "") -> LogRecord:
    return LogRecord(
        step=step,
        phase=StepPhase.ACTION,
        event=event,
        attempt=attempt,
        code=code,
        request_summary={"step": step},
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        at=now(),
    )


async def create(
    engine: AsyncEngine,
    *,
    account_id: uuid.UUID | None = None,
    key: str | None = None,
    owner: str | None = OWNER,
    lease: timedelta = timedelta(hours=1),
) -> tuple[Booking, SagaInstance]:
    """Given a new PENDING booking and its RUNNING saga, written in one unit of work."""
    at = now()
    booking = Booking(
        booking_id=uuid.uuid4(),
        account_id=account_id or uuid.uuid4(),
        event_id=uuid.uuid4(),
        quantity=2,
        status=BookingStatus.PENDING,
        idempotency_key=key or f"key-{uuid.uuid4()}",
        created_at=at,
        updated_at=at,
    )
    saga = SagaInstance(
        saga_id=uuid.uuid4(),
        kind="booking",
        booking_id=booking.booking_id,
        status=SagaStatus.RUNNING,
        current_step=RESERVE_STEP,
        owner=owner,
        lease_expires_at=at + lease,
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        created_at=at,
        updated_at=at,
    )
    async with SqlBookingUnitOfWork(engine) as uow:
        stored = await uow.sagas.create_txn(booking, saga, record(RESERVE_STEP, StepEvent.STARTED))
        await uow.commit()
    return stored, saga


async def log_rows(engine: AsyncEngine, saga_id: uuid.UUID) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT * FROM saga_step_log WHERE saga_id = :id ORDER BY seq"), {"id": saga_id}
        )
        return [tuple(row) for row in rows]


async def saga_count(engine: AsyncEngine, booking_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        count: int = (
            await conn.execute(
                sa.text("SELECT count(*) FROM saga WHERE booking_id = :id"), {"id": booking_id}
            )
        ).scalar_one()
        return count


async def test_a_repeated_key_returns_the_first_booking_and_writes_nothing(
    engine: AsyncEngine,
) -> None:
    account = uuid.uuid4()
    first, saga = await create(engine, account_id=account, key="same")
    again, other_saga = await create(engine, account_id=account, key="same")
    assert again == first
    assert await saga_count(engine, first.booking_id) == 1
    assert len(await log_rows(engine, saga.saga_id)) == 1
    assert await log_rows(engine, other_saga.saga_id) == []
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.get_booking(again.booking_id) == first
        assert [s.saga_id for s in await uow.sagas.sagas_of(first.booking_id)] == [saga.saga_id]


async def test_a_guarded_append_moves_saga_and_booking_and_bumps_the_version(
    engine: AsyncEngine,
) -> None:
    booking, saga = await create(engine)
    async with SqlBookingUnitOfWork(engine) as uow:
        version = await uow.sagas.append_txn(
            saga.saga_id,
            owner=OWNER,
            version=saga.version,
            entry=record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK"),
            current_step=CHARGE_STEP,
            booking_amount_cents=5000,
            now=now(),
        )
        await uow.commit()
    assert version == saga.version + 1
    async with SqlBookingUnitOfWork(engine) as uow:
        loaded, entries = await uow.sagas.load(saga.saga_id)
        stored = await uow.sagas.get_booking(booking.booking_id)
    assert (loaded.version, loaded.current_step) == (version, CHARGE_STEP)
    assert loaded.trace_context == saga.trace_context
    assert stored is not None
    assert (stored.amount_cents, stored.status) == (5000, BookingStatus.PENDING)
    assert [(e.event, e.code) for e in entries] == [
        (StepEvent.STARTED, ""),
        (StepEvent.SUCCEEDED, "OK"),
    ]


@pytest.mark.parametrize(("owner", "stale_by"), [(OWNER, 1), ("replica-b", 0)])
async def test_a_stale_version_or_another_owner_loses_the_lease_and_writes_nothing(
    engine: AsyncEngine, owner: str, stale_by: int
) -> None:
    booking, saga = await create(engine)
    async with SqlBookingUnitOfWork(engine) as uow:
        await uow.sagas.renew_lease(
            saga.saga_id, owner=OWNER, version=saga.version, until=now() + timedelta(hours=1)
        )
        await uow.commit()
    current = saga.version + 1
    before = await log_rows(engine, saga.saga_id)
    async with SqlBookingUnitOfWork(engine) as uow:
        with pytest.raises(LeaseLost):
            await uow.sagas.append_txn(
                saga.saga_id,
                owner=owner,
                version=current - stale_by,
                entry=record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK"),
                status=SagaStatus.COMPENSATING,
                booking_status=BookingStatus.FAILED,
                now=now(),
            )
        with pytest.raises(LeaseLost):
            await uow.sagas.renew_lease(
                saga.saga_id, owner=owner, version=current - stale_by, until=now()
            )
        await uow.commit()
    assert await log_rows(engine, saga.saga_id) == before
    async with SqlBookingUnitOfWork(engine) as uow:
        loaded, _ = await uow.sagas.load(saga.saga_id)
        stored = await uow.sagas.get_booking(booking.booking_id)
    assert (loaded.status, loaded.version) == (SagaStatus.RUNNING, current)
    assert stored == booking


async def test_claim_takes_only_expired_leases(engine: AsyncEngine) -> None:
    _, expired = await create(engine, lease=timedelta(seconds=-1))
    _, live = await create(engine, lease=timedelta(hours=1))
    async with SqlBookingUnitOfWork(engine) as uow:
        claimed = await uow.sagas.claim(
            "replica-b", now=now(), lease_until=now() + timedelta(seconds=30), limit=1000
        )
        await uow.commit()
    by_id = {s.saga_id: s for s in claimed}
    assert expired.saga_id in by_id
    assert live.saga_id not in by_id
    taken = by_id[expired.saga_id]
    assert (taken.owner, taken.version) == ("replica-b", expired.version + 1)
    # The old owner's next write is refused: its version is gone.
    async with SqlBookingUnitOfWork(engine) as uow:
        with pytest.raises(LeaseLost):
            await uow.sagas.append_txn(
                expired.saga_id,
                owner=OWNER,
                version=expired.version,
                entry=record(RESERVE_STEP, StepEvent.SUCCEEDED),
                now=now(),
            )


async def test_claim_with_include_own_takes_back_own_live_sagas(engine: AsyncEngine) -> None:
    owner = f"restarted-{uuid.uuid4()}"
    _, mine = await create(engine, owner=owner, lease=timedelta(hours=1))
    async with SqlBookingUnitOfWork(engine) as uow:
        without = await uow.sagas.claim(
            owner, now=now(), lease_until=now() + timedelta(seconds=30), limit=1000
        )
        with_own = await uow.sagas.claim(
            owner,
            now=now(),
            lease_until=now() + timedelta(seconds=30),
            limit=1000,
            include_own=True,
        )
        await uow.commit()
    assert mine.saga_id not in {s.saga_id for s in without}
    assert mine.saga_id in {s.saga_id for s in with_own}


async def test_two_concurrent_claimers_never_get_the_same_saga(engine: AsyncEngine) -> None:
    mine = {(await create(engine, lease=timedelta(seconds=-1)))[1].saga_id for _ in range(8)}

    async def claimer(owner: str) -> list[uuid.UUID]:
        async with SqlBookingUnitOfWork(engine) as uow:
            claimed = await uow.sagas.claim(
                owner, now=now(), lease_until=now() + timedelta(seconds=30), limit=5
            )
            # Hold the row locks a while, so the other claimer has to skip them.
            await asyncio.sleep(0.2)
            await uow.commit()
        return [s.saga_id for s in claimed]

    first, second = await asyncio.gather(claimer("replica-x"), claimer("replica-y"))
    # Both got work: the second skipped the rows the first held instead of waiting for them.
    assert first
    assert second
    assert not set(first) & set(second)
    assert mine <= set(first) | set(second)


async def test_load_returns_the_log_in_order_and_it_reads_against_the_definition(
    engine: AsyncEngine,
) -> None:
    _, saga = await create(engine)
    version = saga.version
    steps = [
        (RESERVE_STEP, StepEvent.SUCCEEDED, 1),
        (CHARGE_STEP, StepEvent.STARTED, 1),
        (CHARGE_STEP, StepEvent.STARTED, 2),
    ]
    for step, event, attempt in steps:
        async with SqlBookingUnitOfWork(engine) as uow:
            version = await uow.sagas.append_txn(
                saga.saga_id,
                owner=OWNER,
                version=version,
                entry=record(step, event, attempt=attempt),
                now=now(),
            )
            await uow.commit()
    async with SqlBookingUnitOfWork(engine) as uow:
        _, entries = await uow.sagas.load(saga.saga_id)
    assert [(e.step, e.event, e.attempt) for e in entries] == [
        (RESERVE_STEP, StepEvent.STARTED, 1),
        *steps,
    ]
    progress = read_log(BOOKING_SAGA, entries)
    assert progress.actions[1].attempts == 2


async def test_the_log_is_never_rewritten(engine: AsyncEngine) -> None:
    _, saga = await create(engine)
    before = await log_rows(engine, saga.saga_id)
    async with SqlBookingUnitOfWork(engine) as uow:
        await uow.sagas.append_txn(
            saga.saga_id,
            owner=OWNER,
            version=saga.version,
            entry=record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK"),
            now=now(),
        )
        await uow.commit()
    after = await log_rows(engine, saga.saga_id)
    assert after[: len(before)] == before
    seqs = [row[0] for row in after]
    assert seqs == sorted(set(seqs))
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(
                sa.text("UPDATE saga_step_log SET code = 'X' WHERE saga_id = :id"),
                {"id": saga.saga_id},
            )


async def test_request_cancel_flags_a_running_booking_saga_without_taking_its_lease(
    engine: AsyncEngine,
) -> None:
    booking, saga = await create(engine)
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.request_cancel(booking.booking_id)
        assert not await uow.sagas.request_cancel(uuid.uuid4())
        await uow.commit()
    async with SqlBookingUnitOfWork(engine) as uow:
        loaded, _ = await uow.sagas.load(saga.saga_id)
        # The owner's guarded write still holds after the flag.
        await uow.sagas.append_txn(
            saga.saga_id,
            owner=OWNER,
            version=saga.version,
            entry=record(RESERVE_STEP, StepEvent.SUCCEEDED),
            now=now(),
        )
    assert loaded.cancel_requested


async def test_page_bookings_walks_an_account_newest_first(engine: AsyncEngine) -> None:
    account = uuid.uuid4()
    made = [(await create(engine, account_id=account))[0] for _ in range(3)]
    newest_first = sorted(made, key=lambda b: (b.created_at, b.booking_id), reverse=True)
    async with SqlBookingUnitOfWork(engine) as uow:
        page = await uow.sagas.page_bookings(account, after=None, limit=2)
        last = page[-1]
        rest = await uow.sagas.page_bookings(
            account, after=(last.created_at, last.booking_id), limit=2
        )
    assert page + rest == newest_first
