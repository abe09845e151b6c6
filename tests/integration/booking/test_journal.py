"""The saga journal on a real PostgreSQL: PgJournal writes exactly what the unit of work writes.

Every test runs twice, once through PgJournal (one statement per write, as
the service runs) and once through UowJournal over SqlSagaRepository (the
reference), and reads the result back through the repository.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_svc.adapters import journal as pg_journal
from booking_svc.domain.model import Booking, LeaseLost, SagaInstance, Written
from booking_svc.domain.saga import CHARGE_STEP, RESERVE_STEP
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent
from booking_svc.service_layer.unit_of_work import Journal, SqlBookingUnitOfWork, UowJournal
from eventbooking import db
from tests.integration.booking.test_saga_repository import (
    OWNER,
    SPAN_ID,
    TRACE_ID,
    log_rows,
    new_saga,
    now,
    record,
    stored_saga,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CONFIRM_STEP = "confirm_seats"


@pytest.fixture(params=["pg", "uow"])
async def journal(request: pytest.FixtureRequest, engine: AsyncEngine) -> AsyncIterator[Journal]:
    if request.param == "uow":
        yield UowJournal(lambda: SqlBookingUnitOfWork(engine))
        return
    pool = pg_journal.pool(engine.url, max_size=2)
    await pool.open(wait=True)
    try:
        yield pg_journal.PgJournal(pool)
    finally:
        await pool.close()


def new_booking(*, account_id: uuid.UUID | None = None, key: str | None = None) -> Booking:
    at = now()
    return Booking(
        booking_id=uuid.uuid4(),
        account_id=account_id or uuid.uuid4(),
        event_id=uuid.uuid4(),
        quantity=2,
        status=BookingStatus.PENDING,
        idempotency_key=key or f"key-{uuid.uuid4()}",
        created_at=at,
        updated_at=at,
    )


async def created(journal: Journal) -> tuple[Booking, SagaInstance]:
    booking = new_booking()
    saga = new_saga(booking.booking_id)
    stored = await journal.create(booking, saga, record(RESERVE_STEP, StepEvent.STARTED))
    return stored, saga


async def booking_of(engine: AsyncEngine, booking_id: uuid.UUID) -> Booking | None:
    async with SqlBookingUnitOfWork(engine) as uow:
        return await uow.sagas.get_booking(booking_id)


async def test_create_writes_booking_saga_and_first_row(
    journal: Journal, engine: AsyncEngine
) -> None:
    booking, saga = await created(journal)
    assert await booking_of(engine, booking.booking_id) == booking
    assert await stored_saga(engine, saga.saga_id) == saga
    async with SqlBookingUnitOfWork(engine) as uow:
        details = await uow.sagas.details(saga.saga_id)
    assert [(d.entry.step, d.entry.event, d.owner, d.request_summary) for d in details] == [
        (RESERVE_STEP, StepEvent.STARTED, OWNER, {"step": RESERVE_STEP})
    ]
    assert details[0].response_summary is None


async def test_a_repeated_key_returns_the_first_booking_and_writes_nothing(
    journal: Journal, engine: AsyncEngine
) -> None:
    account = uuid.uuid4()
    first = new_booking(account_id=account, key="same")
    saga = new_saga(first.booking_id)
    assert await journal.create(first, saga, record(RESERVE_STEP, StepEvent.STARTED)) == first
    second = new_booking(account_id=account, key="same")
    other = new_saga(second.booking_id)
    assert await journal.create(second, other, record(RESERVE_STEP, StepEvent.STARTED)) == first
    assert await booking_of(engine, second.booking_id) is None
    assert await log_rows(engine, other.saga_id) == []


async def test_an_append_writes_its_rows_in_order_moves_saga_and_booking_and_bumps_once(
    journal: Journal, engine: AsyncEngine
) -> None:
    booking, saga = await created(journal)
    lease = now() + timedelta(seconds=30)
    at = now()
    charged = replace(
        record(CHARGE_STEP, StepEvent.SUCCEEDED, code="OK"),
        response_summary={"charge_id": "c-1", "nested": {"amount": 5000}},
    )
    written = await journal.append(
        saga.saga_id,
        owner=OWNER,
        version=saga.version,
        entries=[charged, record(CONFIRM_STEP, StepEvent.STARTED)],
        current_step=CONFIRM_STEP,
        lease_expires_at=lease,
        booking_amount_cents=5000,
        now=at,
    )
    assert written == Written(version=saga.version + 1, cancel_requested=False)
    loaded = await stored_saga(engine, saga.saga_id)
    assert (loaded.version, loaded.current_step, loaded.lease_expires_at, loaded.updated_at) == (
        written.version,
        CONFIRM_STEP,
        lease,
        at,
    )
    assert loaded.status is SagaStatus.RUNNING
    assert await booking_of(engine, booking.booking_id) == replace(
        booking, amount_cents=5000, updated_at=at
    )
    async with SqlBookingUnitOfWork(engine) as uow:
        details = await uow.sagas.details(saga.saga_id)
    assert [(d.entry.step, d.entry.event, d.entry.code) for d in details] == [
        (RESERVE_STEP, StepEvent.STARTED, ""),
        (CHARGE_STEP, StepEvent.SUCCEEDED, "OK"),
        (CONFIRM_STEP, StepEvent.STARTED, ""),
    ]
    assert details[1].response_summary == {"charge_id": "c-1", "nested": {"amount": 5000}}
    assert (details[1].entry.at, details[1].trace_id, details[1].span_id) == (
        charged.at,
        TRACE_ID,
        SPAN_ID,
    )
    assert details[2].response_summary is None


async def test_an_append_without_rows_or_booking_changes_moves_only_the_saga(
    journal: Journal, engine: AsyncEngine
) -> None:
    booking, saga = await created(journal)
    before = await log_rows(engine, saga.saga_id)
    at = now()
    written = await journal.append(
        saga.saga_id,
        owner=OWNER,
        version=saga.version,
        status=SagaStatus.COMPENSATED,
        note="done",
        now=at,
    )
    assert written.version == saga.version + 1
    assert await log_rows(engine, saga.saga_id) == before
    loaded = await stored_saga(engine, saga.saga_id)
    assert (loaded.status, loaded.note) == (SagaStatus.COMPENSATED, "done")
    assert await booking_of(engine, booking.booking_id) == booking


async def test_the_booking_status_and_reason_change_with_the_saga(
    journal: Journal, engine: AsyncEngine
) -> None:
    booking, saga = await created(journal)
    at = now()
    await journal.append(
        saga.saga_id,
        owner=OWNER,
        version=saga.version,
        status=SagaStatus.COMPENSATED,
        booking_status=BookingStatus.FAILED,
        failure_reason="sold out",
        now=at,
    )
    assert await booking_of(engine, booking.booking_id) == replace(
        booking, status=BookingStatus.FAILED, failure_reason="sold out", updated_at=at
    )


@pytest.mark.parametrize(("owner", "stale_by"), [(OWNER, 1), ("replica-b", 0)])
async def test_a_stale_version_or_another_owner_loses_the_lease_and_writes_nothing(
    journal: Journal, engine: AsyncEngine, owner: str, stale_by: int
) -> None:
    booking, saga = await created(journal)
    current = await journal.append(saga.saga_id, owner=OWNER, version=saga.version, now=now())
    before_log = await log_rows(engine, saga.saga_id)
    before_saga = await stored_saga(engine, saga.saga_id)
    with pytest.raises(LeaseLost):
        await journal.append(
            saga.saga_id,
            owner=owner,
            version=current.version - stale_by,
            entries=[record(CHARGE_STEP, StepEvent.STARTED)],
            status=SagaStatus.COMPENSATING,
            booking_status=BookingStatus.FAILED,
            failure_reason="should not land",
            now=now(),
        )
    assert await log_rows(engine, saga.saga_id) == before_log
    assert await stored_saga(engine, saga.saga_id) == before_saga
    assert await booking_of(engine, booking.booking_id) == booking


async def test_unless_cancelled_leaves_a_cancelled_saga_alone_and_says_so(
    journal: Journal, engine: AsyncEngine
) -> None:
    booking, saga = await created(journal)
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.request_cancel(booking.booking_id)
        await uow.commit()
    before_log = await log_rows(engine, saga.saga_id)
    attempt = {
        "owner": OWNER,
        "version": saga.version,
        "entries": [record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK")],
        "booking_status": BookingStatus.CONFIRMED,
    }
    held = await journal.append(saga.saga_id, unless_cancelled=True, now=now(), **attempt)
    assert held == Written(version=saga.version, cancel_requested=True)
    assert await log_rows(engine, saga.saga_id) == before_log
    assert await booking_of(engine, booking.booking_id) == booking
    # Without the guard the same write lands, and reports the flag.
    landed = await journal.append(saga.saga_id, now=now(), **attempt)
    assert landed == Written(version=saga.version + 1, cancel_requested=True)
    assert len(await log_rows(engine, saga.saga_id)) == len(before_log) + 1


async def test_a_lost_lease_wins_over_a_cancel_request(
    journal: Journal, engine: AsyncEngine
) -> None:
    booking, saga = await created(journal)
    async with SqlBookingUnitOfWork(engine) as uow:
        await uow.sagas.request_cancel(booking.booking_id)
        await uow.commit()
    with pytest.raises(LeaseLost):
        await journal.append(
            saga.saga_id, owner="replica-b", version=saga.version, unless_cancelled=True, now=now()
        )


async def test_the_pool_speaks_to_the_services_database_url(engine: AsyncEngine) -> None:
    info = pg_journal.conninfo(engine.url)
    assert info.startswith("postgresql://")
    assert "+psycopg" not in info
    assert db.is_outage(psycopg.OperationalError("server closed the connection unexpectedly"))


async def test_concurrent_transitions_share_statements_and_each_gets_its_own_answer(
    engine: AsyncEngine,
) -> None:
    pool = pg_journal.pool(engine.url, max_size=2)
    await pool.open(wait=True)
    try:
        journal = pg_journal.PgJournal(pool)
        statements: list[int] = []
        execute = journal._appends._execute

        async def counted(batch: list[Any]) -> list[Any]:
            statements.append(len(batch))
            return await execute(batch)

        journal._appends._execute = counted  # type: ignore[method-assign]
        made = [await created(journal) for _ in range(40)]
        statements.clear()
        (_, stolen), (cancelled_booking, cancelled), *rest = made
        async with SqlBookingUnitOfWork(engine) as uow:
            await uow.sagas.request_cancel(cancelled_booking.booking_id)
            await uow.commit()
        # Another replica took this one over.
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE saga SET owner = 'replica-b' WHERE saga_id = :id"),
                {"id": stolen.saga_id},
            )
        before = {saga.saga_id: await log_rows(engine, saga.saga_id) for _, saga in made[:2]}

        async def advance(saga: SagaInstance) -> Written:
            return await journal.append(
                saga.saga_id,
                owner=OWNER,
                version=saga.version,
                entries=[
                    record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK"),
                    record(CHARGE_STEP, StepEvent.STARTED),
                ],
                current_step=CHARGE_STEP,
                booking_amount_cents=700,
                unless_cancelled=True,
                now=now(),
            )

        answers = await asyncio.gather(*(advance(saga) for _, saga in made), return_exceptions=True)
    finally:
        await pool.close()
    assert isinstance(answers[0], LeaseLost)
    assert answers[1] == Written(version=cancelled.version, cancel_requested=True)
    for saga_id, rows in before.items():
        assert await log_rows(engine, saga_id) == rows
    for (booking, saga), answer in zip(rest, answers[2:], strict=True):
        assert answer == Written(version=saga.version + 1, cancel_requested=False)
        async with SqlBookingUnitOfWork(engine) as uow:
            details = await uow.sagas.details(saga.saga_id)
        assert [(d.entry.step, d.entry.event) for d in details] == [
            (RESERVE_STEP, StepEvent.STARTED),
            (RESERVE_STEP, StepEvent.SUCCEEDED),
            (CHARGE_STEP, StepEvent.STARTED),
        ]
        stored = await booking_of(engine, booking.booking_id)
        assert stored is not None
        assert stored.amount_cents == 700
    # Forty transitions, at most MAX_FLUSHES statements in flight: most shared one.
    assert sum(statements) == len(made)
    assert len(statements) < len(made) / 2


async def test_a_transition_that_breaks_a_rule_fails_alone(engine: AsyncEngine) -> None:
    pool = pg_journal.pool(engine.url, max_size=2)
    await pool.open(wait=True)
    try:
        journal = pg_journal.PgJournal(pool)
        (_, good), (_, bad) = [await created(journal) for _ in range(2)]
        answers = await asyncio.gather(
            journal.append(good.saga_id, owner=OWNER, version=good.version, now=now()),
            # The schema knows no such status: the whole statement fails, then each alone.
            journal.append(
                bad.saga_id,
                owner=OWNER,
                version=bad.version,
                booking_status=cast("BookingStatus", _Unknown()),
                now=now(),
            ),
            return_exceptions=True,
        )
    finally:
        await pool.close()
    assert answers[0] == Written(version=good.version + 1, cancel_requested=False)
    assert isinstance(answers[1], psycopg.errors.CheckViolation)
    assert (await stored_saga(engine, bad.saga_id)).version == bad.version


class _Unknown:
    value = "LOST"


async def test_concurrent_creates_share_statements_and_a_used_key_books_once(
    engine: AsyncEngine,
) -> None:
    pool = pg_journal.pool(engine.url, max_size=2)
    await pool.open(wait=True)
    try:
        journal = pg_journal.PgJournal(pool)
        account = uuid.uuid4()
        earlier = new_booking(account_id=account, key="used-before")
        await journal.create(
            earlier, new_saga(earlier.booking_id), record(RESERVE_STEP, StepEvent.STARTED)
        )
        fresh = [new_booking() for _ in range(30)]
        # The same new key twice in flight at once, and the key used before.
        twins = [new_booking(account_id=account, key="twin") for _ in range(2)]
        again = new_booking(account_id=account, key="used-before")
        wanted = [*fresh, *twins, again]
        sagas = [new_saga(b.booking_id) for b in wanted]
        stored = await asyncio.gather(
            *(
                journal.create(b, saga, record(RESERVE_STEP, StepEvent.STARTED))
                for b, saga in zip(wanted, sagas, strict=True)
            )
        )
    finally:
        await pool.close()
    assert stored[: len(fresh)] == fresh
    for saga in sagas[: len(fresh)]:
        assert await stored_saga(engine, saga.saga_id) == saga
        assert len(await log_rows(engine, saga.saga_id)) == 1
    first_twin, second_twin = stored[len(fresh) : len(fresh) + 2]
    assert first_twin == second_twin
    assert first_twin.booking_id in {t.booking_id for t in twins}
    assert stored[-1] == earlier
    assert await booking_of(engine, again.booking_id) is None
    assert await log_rows(engine, sagas[-1].saga_id) == []
