"""The booking handlers over fakes: idempotent creation, waiting, watching, history, paging."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from booking_svc.domain import commands
from booking_svc.domain.model import Booking
from booking_svc.domain.states import SETTLED, BookingStatus, SagaStatus, StepEvent, StepPhase
from eventbooking.errors import AlreadyExists, FailedPrecondition, NotFound
from tests.unit.booking.fakes import World, refused

AMOUNT = 5000


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World()
    yield world
    await world.close()


def elapsed_since(start: float) -> float:
    return asyncio.get_running_loop().time() - start


def now() -> float:
    return asyncio.get_running_loop().time()


# CreateBooking is idempotent by (account, key).


async def test_the_same_key_twice_makes_one_booking(world: World) -> None:
    first = await world.book(key="order-1")
    again = await world.book(key="order-1")
    await world.settle()
    late = await world.book(key="order-1")

    assert again.booking_id == first.booking_id
    assert late.booking_id == first.booking_id
    assert late.status is BookingStatus.CONFIRMED
    assert list(world.store.bookings) == [first.booking_id]
    assert len(world.store.sagas) == 1
    assert world.participants.operations("reserve_seats", "charge") == ["reserve_seats", "charge"]


@pytest.mark.parametrize(
    "changed", [{"event_id": uuid.uuid4()}, {"quantity": 3}], ids=["event", "quantity"]
)
async def test_the_same_key_for_a_different_booking_is_refused(
    world: World, changed: dict[str, Any]
) -> None:
    first = await world.book(key="order-1")

    with pytest.raises(AlreadyExists, match="order-1"):
        await world.book(key="order-1", **changed)

    assert list(world.store.bookings) == [first.booking_id]
    assert len(world.store.sagas) == 1


async def test_the_same_key_from_another_account_is_another_booking(world: World) -> None:
    mine = await world.book(key="order-1")
    theirs = await world.book(key="order-1", account_id=uuid.uuid4())
    await world.settle()

    assert mine.booking_id != theirs.booking_id
    assert world.booking(mine.booking_id).status is BookingStatus.CONFIRMED
    assert world.booking(theirs.booking_id).status is BookingStatus.CONFIRMED
    assert world.participants.net_charged() == 2 * AMOUNT


# Waiting for an outcome.


@pytest.mark.parametrize(
    ("refusal", "outcome"),
    [(None, BookingStatus.CONFIRMED), ("sold out", BookingStatus.FAILED)],
)
async def test_create_with_a_wait_returns_at_the_outcome(
    world: World, refusal: str | None, outcome: BookingStatus
) -> None:
    if refusal:
        world.participants.script("reserve_seats", refused(refusal))
    start = now()

    booking = await world.book(wait=10)

    assert booking.status is outcome
    assert booking == world.booking(booking.booking_id)
    assert elapsed_since(start) < 5


async def test_create_with_a_wait_returns_pending_when_the_wait_ends_first(world: World) -> None:
    gate = world.participants.gate("confirm_reservation")
    start = now()

    booking = await world.book(wait=0.05)

    assert booking.status is BookingStatus.PENDING
    assert elapsed_since(start) >= 0.05
    gate.open()
    await world.settle()
    assert world.booking(booking.booking_id).status is BookingStatus.CONFIRMED


async def test_a_repeated_create_with_a_wait_returns_the_outcome_of_the_first(
    world: World,
) -> None:
    first = await world.book(key="order-1")

    again = await world.book(key="order-1", wait=10)

    assert (again.booking_id, again.status) == (first.booking_id, BookingStatus.CONFIRMED)


async def test_wait_for_sees_an_outcome_another_replica_reached(world: World) -> None:
    other = world.start(owner="replica-b")
    gate = world.participants.gate("confirm_reservation")
    booking = await world.book(app=other)
    await gate.reached.wait()

    waiting = asyncio.create_task(
        world.app.handlers.wait_for(booking.booking_id, SETTLED, within=10)
    )
    await asyncio.sleep(0.02)
    assert not waiting.done()
    gate.open()
    settled = await waiting

    # Nothing was published in this process: the waiter read the database again.
    assert settled.status is BookingStatus.CONFIRMED
    assert world.app.engine.running == frozenset()


async def test_cancel_with_a_wait_returns_once_the_pending_booking_is_cancelled(
    world: World,
) -> None:
    gate = world.participants.gate("charge")
    booking = await world.book()
    await gate.reached.wait()

    cancelling = asyncio.create_task(world.app.handlers.cancel_booking(booking.booking_id, wait=10))
    await asyncio.sleep(0)
    gate.open()
    cancelled = await cancelling

    assert cancelled.status is BookingStatus.CANCELLED
    assert world.participants.net_charged() == 0


# Watching.


async def test_watch_yields_each_change_and_ends_at_a_settled_status(world: World) -> None:
    gate = world.participants.gate("confirm_reservation")
    booking = await world.book()

    seen: list[Booking] = []
    async for change in world.app.handlers.watch(booking.booking_id):
        seen.append(change)
        if change.amount_cents:
            gate.open()

    assert [(b.status, b.amount_cents) for b in seen] == [
        (BookingStatus.PENDING, 0),
        (BookingStatus.PENDING, AMOUNT),
        (BookingStatus.CONFIRMED, AMOUNT),
    ]
    assert seen[-1] == world.booking(booking.booking_id)


async def test_watch_of_a_failing_booking_ends_at_failed(world: World) -> None:
    world.participants.script("charge", refused("insufficient funds"))
    booking = await world.book()

    seen = [change async for change in world.app.handlers.watch(booking.booking_id)]

    assert seen[0].status is BookingStatus.PENDING
    assert seen[-1].status is BookingStatus.FAILED
    assert [b.status for b in seen].count(BookingStatus.FAILED) == 1
    assert (
        seen[-1].failure_reason == "charge_account failed: FAILED_PRECONDITION: insufficient funds"
    )


async def test_watch_of_a_settled_booking_yields_it_once(world: World) -> None:
    booking = await world.book()
    await world.settle()

    seen = [change async for change in world.app.handlers.watch(booking.booking_id)]

    assert seen == [world.booking(booking.booking_id)]


async def test_watch_follows_a_cancel_through_cancelling_to_cancelled(world: World) -> None:
    booking = await world.book()
    await world.settle()
    gate = world.participants.gate("refund")
    await world.app.handlers.cancel_booking(booking.booking_id)

    statuses: list[BookingStatus] = []
    async for change in world.app.handlers.watch(booking.booking_id):
        statuses.append(change.status)
        gate.open()

    assert statuses == [BookingStatus.CANCELLING, BookingStatus.CANCELLED]


# History.


async def test_history_lists_every_row_of_every_saga_of_a_booking_in_order(world: World) -> None:
    booking = await world.book()
    await world.settle()
    await world.app.handlers.cancel_booking(booking.booking_id, wait=10)

    history = await world.app.handlers.history(booking.booking_id)

    booking_saga = world.saga(booking.booking_id)
    cancel_saga = world.saga(booking.booking_id, "cancel")
    assert (history.saga.saga_id, history.saga.status) == (
        booking_saga.saga_id,
        SagaStatus.COMPLETED,
    )
    seqs = [detail.entry.seq for _, detail in history.rows]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    trail = [(saga_id, d.entry.step, d.entry.phase, d.entry.event) for saga_id, d in history.rows]
    started, succeeded = StepEvent.STARTED, StepEvent.SUCCEEDED
    assert trail == [
        (booking_saga.saga_id, step, StepPhase.ACTION, event)
        for step in ("reserve_seats", "charge_account", "confirm_seats", "notify")
        for event in (started, succeeded)
    ] + [
        (cancel_saga.saga_id, step, StepPhase.ACTION, event)
        for step in ("release_seats", "refund", "notify")
        for event in (started, succeeded)
    ]
    assert {d.owner for _, d in history.rows} == {world.settings.instance_id}
    reserve_started = history.rows[0][1]
    assert reserve_started.request_summary["quantity"] == 2
    reserve_done = history.rows[1][1]
    assert reserve_done.response_summary is not None
    assert reserve_done.response_summary["amount_cents"] == AMOUNT


async def test_history_shows_the_retries_and_the_failure(world: World) -> None:
    world.participants.script("reserve_seats", refused("sold out"))
    booking = await world.book()
    await world.settle()

    history = await world.app.handlers.history(booking.booking_id)

    assert history.saga.status is SagaStatus.COMPENSATED
    assert [
        (d.entry.step, d.entry.phase, d.entry.event, d.entry.code) for _, d in history.rows
    ] == [
        ("reserve_seats", StepPhase.ACTION, StepEvent.STARTED, ""),
        ("reserve_seats", StepPhase.ACTION, StepEvent.FAILED, "FAILED_PRECONDITION"),
    ]
    assert history.rows[1][1].entry.message == "sold out"


# Refusals and unknown ids.


async def test_cancelling_a_failed_booking_is_a_failed_precondition(world: World) -> None:
    world.participants.script("reserve_seats", refused("sold out"))
    booking = await world.book()
    await world.settle()

    with pytest.raises(FailedPrecondition, match="sold out"):
        await world.app.handlers.cancel_booking(booking.booking_id)

    assert world.booking(booking.booking_id).status is BookingStatus.FAILED
    assert len(world.store.sagas_of(booking.booking_id)) == 1


async def test_unknown_ids_are_not_found(world: World) -> None:
    handlers = world.app.handlers
    missing = uuid.uuid4()

    with pytest.raises(NotFound):
        await handlers.get_booking(missing)
    with pytest.raises(NotFound):
        await handlers.cancel_booking(missing)
    with pytest.raises(NotFound):
        await handlers.history(missing)
    with pytest.raises(NotFound):
        await handlers.wait_for(missing, SETTLED, within=0.01)
    with pytest.raises(NotFound):
        await anext(handlers.watch(missing))
    with pytest.raises(NotFound):
        await handlers.get_saga(missing)
    with pytest.raises(NotFound):
        await handlers.retry_saga(missing)
    with pytest.raises(NotFound):
        await handlers.compensate_saga(missing)


async def test_repairing_a_saga_that_is_not_stuck_is_a_failed_precondition(world: World) -> None:
    booking = await world.book()
    await world.settle()
    saga = world.saga(booking.booking_id)

    with pytest.raises(FailedPrecondition, match="COMPLETED"):
        await world.app.handlers.retry_saga(saga.saga_id)
    with pytest.raises(FailedPrecondition, match="COMPLETED"):
        await world.app.handlers.compensate_saga(saga.saga_id)
    assert world.saga(booking.booking_id) == saga


# Listing.


async def test_list_bookings_pages_through_an_account_newest_first(world: World) -> None:
    made = [await world.book() for _ in range(5)]
    await world.book(account_id=uuid.uuid4())
    await world.settle()

    pages: list[list[Booking]] = []
    after = None
    while True:
        page = await world.app.handlers.list_bookings(
            commands.ListBookings(account_id=world.account_id, page_size=2, after=after)
        )
        pages.append(page.bookings)
        after = page.next_after
        if after is None:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [b.booking_id for p in pages for b in p]
    assert listed == [b.booking_id for b in reversed(made)]


async def test_list_bookings_of_an_account_with_none_is_one_empty_page(world: World) -> None:
    await world.book()

    page = await world.app.handlers.list_bookings(
        commands.ListBookings(account_id=uuid.uuid4(), page_size=10, after=None)
    )

    assert (page.bookings, page.next_after) == ([], None)


async def test_list_sagas_filters_by_status_and_kind(world: World) -> None:
    world.participants.script("send_notification", refused("no such address"))
    stuck = await world.book()
    await world.settle()
    fine = await world.book()
    await world.settle()
    await world.app.handlers.cancel_booking(fine.booking_id, wait=10)

    def ask(status: SagaStatus | None, kind: str) -> commands.ListSagas:
        return commands.ListSagas.parse(
            status=status, kind=kind, step="", min_age_seconds=0, size=10, after=None
        )

    stuck_page = await world.app.handlers.list_sagas(ask(SagaStatus.STUCK, ""))
    cancel_page = await world.app.handlers.list_sagas(ask(None, "cancel"))
    every = await world.app.handlers.list_sagas(ask(None, ""))

    assert [s.booking_id for s in stuck_page.sagas] == [stuck.booking_id]
    assert [s.booking_id for s in cancel_page.sagas] == [fine.booking_id]
    assert [s.kind for s in every.sagas] == ["booking", "booking", "cancel"]
    assert every.next_after is None
