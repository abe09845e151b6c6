"""The saga repository on a real PostgreSQL: creation, guarded writes, leases, claims, operator moves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_svc.domain.log import read_log
from booking_svc.domain.model import Booking, LeaseLost, LogRecord, SagaInstance, Written
from booking_svc.domain.saga import BOOKING_SAGA, CANCEL_SAGA, CHARGE_STEP, RESERVE_STEP
from booking_svc.domain.states import BookingStatus, SagaStatus, StepEvent, StepPhase
from booking_svc.service_layer.unit_of_work import SqlBookingUnitOfWork

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OWNER = "replica-a"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
RELEASE_STEP = CANCEL_SAGA.steps[0].name


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
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        at=now(),
    )


def new_saga(
    booking_id: uuid.UUID,
    *,
    kind: str = "booking",
    step: str = RESERVE_STEP,
    owner: str | None = OWNER,
    lease: timedelta = timedelta(hours=1),
) -> SagaInstance:
    at = now()
    return SagaInstance(
        saga_id=uuid.uuid4(),
        kind=kind,
        booking_id=booking_id,
        status=SagaStatus.RUNNING,
        current_step=step,
        owner=owner,
        lease_expires_at=at + lease,
        trace_context={"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"},
        created_at=at,
        updated_at=at,
    )


async def create(
    engine: AsyncEngine,
    *,
    account_id: uuid.UUID | None = None,
    key: str | None = None,
    owner: str | None = OWNER,
    lease: timedelta = timedelta(hours=1),
    step: str = RESERVE_STEP,
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
    saga = new_saga(booking.booking_id, step=step, owner=owner, lease=lease)
    async with SqlBookingUnitOfWork(engine) as uow:
        stored = await uow.sagas.create_txn(booking, saga, record(step, StepEvent.STARTED))
        await uow.commit()
    return stored, saga


async def add_cancel_saga(
    engine: AsyncEngine, booking_id: uuid.UUID, *, step: str = RELEASE_STEP
) -> SagaInstance:
    """Given a RUNNING cancel saga for an existing booking, with its first log row."""
    cancel = new_saga(booking_id, kind="cancel", step=step)
    async with SqlBookingUnitOfWork(engine) as uow:
        await uow.sagas.add_saga_txn(cancel, record(step, StepEvent.STARTED))
        await uow.commit()
    return cancel


async def append(
    engine: AsyncEngine,
    saga_id: uuid.UUID,
    *,
    version: int,
    entries: Sequence[LogRecord] = (),
    status: SagaStatus | None = None,
    note: str | None = None,
) -> Written:
    """One guarded write by OWNER, committed on its own."""
    async with SqlBookingUnitOfWork(engine) as uow:
        written = await uow.sagas.append_txn(
            saga_id,
            owner=OWNER,
            version=version,
            entries=entries,
            status=status,
            note=note,
            now=now(),
        )
        await uow.commit()
    return written


async def stored_saga(engine: AsyncEngine, saga_id: uuid.UUID) -> SagaInstance:
    async with SqlBookingUnitOfWork(engine) as uow:
        saga = await uow.sagas.get_saga(saga_id)
    assert saga is not None
    return saga


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


async def test_get_saga_reads_back_the_saga_as_created_and_none_for_an_unknown_id(
    engine: AsyncEngine,
) -> None:
    _, saga = await create(engine)
    assert await stored_saga(engine, saga.saga_id) == saga
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.get_saga(uuid.uuid4()) is None


async def test_one_guarded_append_writes_several_rows_moves_saga_and_booking_and_bumps_once(
    engine: AsyncEngine,
) -> None:
    booking, saga = await create(engine)
    async with SqlBookingUnitOfWork(engine) as uow:
        written = await uow.sagas.append_txn(
            saga.saga_id,
            owner=OWNER,
            version=saga.version,
            entries=[
                record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK"),
                record(CHARGE_STEP, StepEvent.STARTED),
            ],
            current_step=CHARGE_STEP,
            booking_amount_cents=5000,
            now=now(),
        )
        await uow.commit()
    assert written == Written(version=saga.version + 1, cancel_requested=False)
    async with SqlBookingUnitOfWork(engine) as uow:
        loaded, _ = await uow.sagas.load(saga.saga_id)
        details = await uow.sagas.details(saga.saga_id)
        stored = await uow.sagas.get_booking(booking.booking_id)
    assert (loaded.version, loaded.current_step) == (written.version, CHARGE_STEP)
    assert loaded.trace_context == saga.trace_context
    assert stored is not None
    assert (stored.amount_cents, stored.status) == (5000, BookingStatus.PENDING)
    assert [(d.entry.step, d.entry.event, d.entry.code, d.owner) for d in details] == [
        (RESERVE_STEP, StepEvent.STARTED, "", OWNER),
        (RESERVE_STEP, StepEvent.SUCCEEDED, "OK", OWNER),
        (CHARGE_STEP, StepEvent.STARTED, "", OWNER),
    ]


async def test_a_status_only_append_ends_saga_and_booking_without_a_log_row(
    engine: AsyncEngine,
) -> None:
    booking, saga = await create(engine)
    before = await log_rows(engine, saga.saga_id)
    at = now()
    async with SqlBookingUnitOfWork(engine) as uow:
        written = await uow.sagas.append_txn(
            saga.saga_id,
            owner=OWNER,
            version=saga.version,
            status=SagaStatus.COMPENSATED,
            booking_status=BookingStatus.FAILED,
            failure_reason="card declined",
            now=at,
        )
        await uow.commit()
    assert written.version == saga.version + 1
    assert await log_rows(engine, saga.saga_id) == before
    async with SqlBookingUnitOfWork(engine) as uow:
        stored = await uow.sagas.get_booking(booking.booking_id)
    loaded = await stored_saga(engine, saga.saga_id)
    assert (loaded.status, loaded.version, loaded.updated_at) == (
        SagaStatus.COMPENSATED,
        written.version,
        at,
    )
    assert stored == replace(
        booking, status=BookingStatus.FAILED, failure_reason="card declined", updated_at=at
    )


@pytest.mark.parametrize(("owner", "stale_by"), [(OWNER, 1), ("replica-b", 0)])
async def test_a_stale_version_or_another_owner_loses_the_lease_and_writes_nothing(
    engine: AsyncEngine, owner: str, stale_by: int
) -> None:
    booking, saga = await create(engine)
    current = await append(
        engine,
        saga.saga_id,
        version=saga.version,
        entries=[record(RESERVE_STEP, StepEvent.SUCCEEDED)],
    )
    before_log = await log_rows(engine, saga.saga_id)
    before_saga = await stored_saga(engine, saga.saga_id)
    async with SqlBookingUnitOfWork(engine) as uow:
        with pytest.raises(LeaseLost):
            await uow.sagas.append_txn(
                saga.saga_id,
                owner=owner,
                version=current.version - stale_by,
                entries=[record(CHARGE_STEP, StepEvent.STARTED)],
                status=SagaStatus.COMPENSATING,
                note="should not land",
                booking_status=BookingStatus.FAILED,
                failure_reason="should not land",
                now=now(),
            )
        await uow.commit()
    assert await log_rows(engine, saga.saga_id) == before_log
    assert await stored_saga(engine, saga.saga_id) == before_saga
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.get_booking(booking.booking_id) == booking


async def test_a_cancel_request_comes_back_with_the_owners_next_write_which_still_holds(
    engine: AsyncEngine,
) -> None:
    booking, saga = await create(engine)
    first = await append(engine, saga.saga_id, version=saga.version)
    assert not first.cancel_requested
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.request_cancel(booking.booking_id)
        await uow.commit()
    # The flag left the version alone, so the owner's guarded write still matches.
    assert await append(engine, saga.saga_id, version=first.version) == Written(
        version=first.version + 1, cancel_requested=True
    )


@pytest.mark.parametrize(
    ("status", "flagged"),
    [
        (SagaStatus.RUNNING, True),
        (SagaStatus.COMPENSATING, True),
        (SagaStatus.STUCK, True),
        (SagaStatus.COMPLETED, False),
        (SagaStatus.COMPENSATED, False),
    ],
)
async def test_request_cancel_flags_only_an_unfinished_booking_saga(
    engine: AsyncEngine, status: SagaStatus, flagged: bool
) -> None:
    booking, saga = await create(engine)
    await append(engine, saga.saga_id, version=saga.version, status=status)
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.request_cancel(booking.booking_id) is flagged
        await uow.commit()
    assert (await stored_saga(engine, saga.saga_id)).cancel_requested is flagged


async def test_request_cancel_leaves_a_cancel_saga_alone(engine: AsyncEngine) -> None:
    booking, saga = await create(engine)
    await append(engine, saga.saga_id, version=saga.version, status=SagaStatus.COMPLETED)
    cancel = await add_cancel_saga(engine, booking.booking_id)
    async with SqlBookingUnitOfWork(engine) as uow:
        assert not await uow.sagas.request_cancel(booking.booking_id)
        assert not await uow.sagas.request_cancel(uuid.uuid4())
        await uow.commit()
    assert not (await stored_saga(engine, cancel.saga_id)).cancel_requested


async def test_renew_leases_extends_only_the_owners_leases_and_keeps_the_version(
    engine: AsyncEngine,
) -> None:
    _, mine = await create(engine)
    _, also_mine = await create(engine)
    _, theirs = await create(engine, owner="replica-b")
    until = now() + timedelta(hours=2)
    async with SqlBookingUnitOfWork(engine) as uow:
        held = await uow.sagas.renew_leases(
            OWNER, [mine.saga_id, also_mine.saga_id, theirs.saga_id, uuid.uuid4()], until=until
        )
        await uow.commit()
    assert held == {mine.saga_id, also_mine.saga_id}
    renewed = await stored_saga(engine, mine.saga_id)
    assert (renewed.lease_expires_at, renewed.version) == (until, mine.version)
    assert await stored_saga(engine, theirs.saga_id) == theirs
    # A renewal is no step: the owner's next guarded write still matches.
    assert (await append(engine, mine.saga_id, version=mine.version)).version == mine.version + 1


async def test_a_released_saga_is_claimed_at_once_and_another_owners_is_not_released(
    engine: AsyncEngine,
) -> None:
    _, mine = await create(engine)
    _, theirs = await create(engine, owner="replica-b")
    async with SqlBookingUnitOfWork(engine) as uow:
        await uow.sagas.release(OWNER, [mine.saga_id, theirs.saga_id])
        await uow.commit()
    assert (await stored_saga(engine, mine.saga_id)).lease_expires_at is None
    assert await stored_saga(engine, theirs.saga_id) == theirs
    async with SqlBookingUnitOfWork(engine) as uow:
        claimed = await uow.sagas.claim(
            "replica-c", now=now(), lease_until=now() + timedelta(seconds=30), limit=1000
        )
        await uow.commit()
    by_id = {s.saga_id: s for s in claimed}
    assert theirs.saga_id not in by_id
    assert by_id[mine.saga_id].owner == "replica-c"


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
    with pytest.raises(LeaseLost):
        await append(
            engine,
            expired.saga_id,
            version=expired.version,
            entries=[record(RESERVE_STEP, StepEvent.SUCCEEDED)],
        )


async def test_claim_skips_the_excluded_sagas(engine: AsyncEngine) -> None:
    _, running_here = await create(engine, lease=timedelta(seconds=-1))
    _, other = await create(engine, lease=timedelta(seconds=-1))
    async with SqlBookingUnitOfWork(engine) as uow:
        first = await uow.sagas.claim(
            "replica-b",
            now=now(),
            lease_until=now() + timedelta(seconds=30),
            limit=1000,
            exclude=[running_here.saga_id],
        )
        # Without the exclusion the same claimer takes it: exclusion was the only reason.
        second = await uow.sagas.claim(
            "replica-b", now=now(), lease_until=now() + timedelta(seconds=30), limit=1000
        )
        await uow.commit()
    assert other.saga_id in {s.saga_id for s in first}
    assert running_here.saga_id not in {s.saga_id for s in first}
    assert [s.saga_id for s in second] == [running_here.saga_id]


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


async def test_a_booking_gets_one_cancel_saga_and_never_a_second(engine: AsyncEngine) -> None:
    booking, saga = await create(engine)
    cancel = await add_cancel_saga(engine, booking.booking_id)
    async with SqlBookingUnitOfWork(engine) as uow:
        sagas = await uow.sagas.sagas_of(booking.booking_id)
        details = await uow.sagas.details(cancel.saga_id)
    assert [(s.saga_id, s.kind) for s in sagas] == [
        (saga.saga_id, "booking"),
        (cancel.saga_id, "cancel"),
    ]
    assert [(d.entry.step, d.entry.event, d.owner) for d in details] == [
        (RELEASE_STEP, StepEvent.STARTED, OWNER)
    ]
    with pytest.raises(IntegrityError, match="one_saga_per_kind"):
        await add_cancel_saga(engine, booking.booking_id)
    assert await saga_count(engine, booking.booking_id) == 2


async def test_take_over_moves_a_stuck_saga_to_the_operator_and_logs_as_the_operator(
    engine: AsyncEngine,
) -> None:
    _, saga = await create(engine)
    parked = await append(
        engine,
        saga.saga_id,
        version=saga.version,
        entries=[record(RESERVE_STEP, StepEvent.FAILED, code="FAILED_PRECONDITION")],
        status=SagaStatus.STUCK,
        note="reserve refused",
    )
    stuck = await stored_saga(engine, saga.saga_id)
    assert (stuck.status, stuck.note) == (SagaStatus.STUCK, "reserve refused")
    at = now()
    async with SqlBookingUnitOfWork(engine) as uow:
        taken = await uow.sagas.take_over_txn(
            saga.saga_id,
            expected=SagaStatus.STUCK,
            owner="operator",
            lease_until=at + timedelta(minutes=5),
            status=SagaStatus.RUNNING,
            note="an operator asked to retry",
            entries=[record(RESERVE_STEP, StepEvent.RETRYING)],
            now=at,
        )
        await uow.commit()
    assert taken == replace(
        stuck,
        status=SagaStatus.RUNNING,
        owner="operator",
        lease_expires_at=at + timedelta(minutes=5),
        version=parked.version + 1,
        note="an operator asked to retry",
        updated_at=at,
    )
    async with SqlBookingUnitOfWork(engine) as uow:
        loaded, entries = await uow.sagas.load(saga.saga_id)
        details = await uow.sagas.details(saga.saga_id)
    assert [(d.entry.event, d.owner) for d in details] == [
        (StepEvent.STARTED, OWNER),
        (StepEvent.FAILED, OWNER),
        (StepEvent.RETRYING, "operator"),
    ]
    assert loaded == taken
    assert read_log(BOOKING_SAGA, entries).actions[0].attempts == 1
    # The replica that parked the saga can no longer write to it.
    with pytest.raises(LeaseLost):
        await append(engine, saga.saga_id, version=parked.version)


async def test_take_over_of_a_saga_not_in_the_expected_status_changes_nothing(
    engine: AsyncEngine,
) -> None:
    _, saga = await create(engine)
    before = await log_rows(engine, saga.saga_id)
    async with SqlBookingUnitOfWork(engine) as uow:
        taken = await uow.sagas.take_over_txn(
            saga.saga_id,
            expected=SagaStatus.STUCK,
            owner="operator",
            lease_until=now() + timedelta(minutes=5),
            status=SagaStatus.COMPENSATING,
            note="an operator asked to compensate",
            entries=[record(RESERVE_STEP, StepEvent.RETRYING)],
            now=now(),
        )
        await uow.commit()
    assert taken is None
    assert await stored_saga(engine, saga.saga_id) == saga
    assert await log_rows(engine, saga.saga_id) == before


async def test_details_show_what_was_sent_and_received_the_trace_and_the_writer(
    engine: AsyncEngine,
) -> None:
    _, saga = await create(engine)
    replied = replace(
        record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK"),
        message="reserved",
        response_summary={"reservation_id": "r-1", "amount_cents": 5000},
    )
    await append(engine, saga.saga_id, version=saga.version, entries=[replied])
    async with SqlBookingUnitOfWork(engine) as uow:
        details = await uow.sagas.details(saga.saga_id)
    assert [
        (d.entry.event, d.entry.message, d.request_summary, d.response_summary, d.owner)
        for d in details
    ] == [
        (StepEvent.STARTED, "", {"step": RESERVE_STEP}, None, OWNER),
        (StepEvent.SUCCEEDED, "reserved", {"step": RESERVE_STEP}, replied.response_summary, OWNER),
    ]
    assert [(d.trace_id, d.span_id) for d in details] == [(TRACE_ID, SPAN_ID)] * 2
    async with SqlBookingUnitOfWork(engine) as uow:
        assert await uow.sagas.details(uuid.uuid4()) == []


async def test_list_sagas_filters_and_pages_oldest_first(engine: AsyncEngine) -> None:
    # A step name of this test's own keeps other tests' sagas out of every listing.
    step = f"step-{uuid.uuid4()}"
    booked = [(await create(engine, step=step))[1] for _ in range(3)]
    oldest, parked, newest = booked
    await append(engine, parked.saga_id, version=parked.version, status=SagaStatus.STUCK)
    cancel = await add_cancel_saga(engine, oldest.booking_id, step=step)
    between = parked.created_at + (newest.created_at - parked.created_at) / 2

    async def ids(
        *,
        status: SagaStatus | None = None,
        kind: str | None = None,
        created_before: datetime | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 10,
    ) -> list[uuid.UUID]:
        async with SqlBookingUnitOfWork(engine) as uow:
            sagas = await uow.sagas.list_sagas(
                status=status,
                kind=kind,
                step=step,
                created_before=created_before,
                after=after,
                limit=limit,
            )
        return [s.saga_id for s in sagas]

    assert await ids() == [s.saga_id for s in (*booked, cancel)]
    assert await ids(status=SagaStatus.STUCK) == [parked.saga_id]
    assert await ids(kind="cancel") == [cancel.saga_id]
    assert await ids(created_before=between) == [oldest.saga_id, parked.saga_id]
    assert await ids(limit=2) == [oldest.saga_id, parked.saga_id]
    assert await ids(after=(parked.created_at, parked.saga_id), limit=2) == [
        newest.saga_id,
        cancel.saga_id,
    ]


async def test_set_booking_status_moves_only_from_the_expected_status(
    engine: AsyncEngine,
) -> None:
    booking, _ = await create(engine)
    at = now()
    async with SqlBookingUnitOfWork(engine) as uow:
        moved = await uow.sagas.set_booking_status_txn(
            booking.booking_id,
            expected=BookingStatus.PENDING,
            status=BookingStatus.CANCELLING,
            now=at,
        )
        await uow.commit()
    assert moved == replace(booking, status=BookingStatus.CANCELLING, updated_at=at)
    async with SqlBookingUnitOfWork(engine) as uow:
        again = await uow.sagas.set_booking_status_txn(
            booking.booking_id,
            expected=BookingStatus.PENDING,
            status=BookingStatus.CONFIRMED,
            now=now(),
        )
        await uow.commit()
        assert again is None
        assert await uow.sagas.get_booking(booking.booking_id) == moved


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
        written = await append(
            engine, saga.saga_id, version=version, entries=[record(step, event, attempt=attempt)]
        )
        version = written.version
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
    await append(
        engine,
        saga.saga_id,
        version=saga.version,
        entries=[record(RESERVE_STEP, StepEvent.SUCCEEDED, code="OK")],
    )
    after = await log_rows(engine, saga.saga_id)
    assert len(after) == len(before) + 1
    assert after[: len(before)] == before
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(
                sa.text("UPDATE saga_step_log SET code = 'X' WHERE saga_id = :id"),
                {"id": saga.saga_id},
            )


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


async def test_page_bookings_without_an_account_walks_every_account(engine: AsyncEngine) -> None:
    made = [(await create(engine, account_id=uuid.uuid4()))[0] for _ in range(3)]
    seen = []
    after = None
    async with SqlBookingUnitOfWork(engine) as uow:
        while page := await uow.sagas.page_bookings(None, after=after, limit=2):
            seen += page
            after = (page[-1].created_at, page[-1].booking_id)
    assert seen == sorted(seen, key=lambda b: (b.created_at, b.booking_id), reverse=True)
    assert {b.booking_id for b in made} <= {b.booking_id for b in seen}
