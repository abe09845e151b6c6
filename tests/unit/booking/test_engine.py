"""The saga engine over fakes: given what the participants answer, expect the log and the end state.

Every test runs the real engine, planner and handlers from `bootstrap`; only
the database and the other services are doubles (tests/unit/booking/fakes.py).
"Net zero" means the participants hold nothing for the booking: no seat held
or sold, no money taken, whatever arrived late.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from booking_svc.bootstrap import definitions
from booking_svc.domain.model import Booking, LeaseLost, SagaInstance
from booking_svc.domain.states import BookingStatus, SagaStatus, StepPhase
from booking_svc.service_layer import crash
from eventbooking.errors import FailedPrecondition
from tests.unit.booking.fakes import (
    LIVE,
    OK,
    START,
    CrashAt,
    FakeUnitOfWork,
    Reply,
    World,
    broken,
    lost_reply,
    refused,
    settings,
    timed_out,
    transient,
)

RESERVE, CHARGE, CONFIRM, NOTIFY = "reserve_seats", "charge_account", "confirm_seats", "notify"
RELEASE, REFUND = "release_seats", "refund"
ACTION, COMPENSATION = StepPhase.ACTION, StepPhase.COMPENSATION
# Two seats at FakeParticipants.PRICE_CENTS each.
AMOUNT = 5000

MakeWorld = Callable[..., World]


@pytest.fixture
async def make_world() -> AsyncIterator[MakeWorld]:
    made: list[World] = []

    def make(**kwargs: Any) -> World:
        world = World(**kwargs)
        made.append(world)
        return world

    yield make
    for world in made:
        await world.close()


def assert_net_zero(world: World) -> None:
    p = world.participants
    assert p.seats("HELD", "CONFIRMED") == 0
    assert p.net_charged() == 0
    assert all(balance == p.OPENING_BALANCE for balance in p.balances.values())


def assert_confirmed_once(world: World, booking_id: uuid.UUID) -> None:
    p = world.participants
    booking = world.booking(booking_id)
    assert (booking.status, booking.amount_cents) == (BookingStatus.CONFIRMED, AMOUNT)
    assert p.seats("CONFIRMED") == 2
    assert p.seats("HELD") == 0
    assert p.net_charged(world.account_id) == AMOUNT
    assert len(p.charges_for(booking_id)) == 1
    assert p.balances[world.account_id] == p.OPENING_BALANCE - AMOUNT
    assert [n.kind for n in p.notifications.values()] == ["booking_confirmed"]


async def booked(world: World) -> Booking:
    """Given a booking the engine has run as far as it goes."""
    booking = await world.book()
    await world.settle()
    return world.booking(booking.booking_id)


# The forward path and its retries.


async def test_a_booking_with_no_failures_runs_each_step_once_and_is_confirmed(
    make_world: MakeWorld,
) -> None:
    world = make_world()

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPLETED
    assert world.trail(saga.saga_id) == [
        (step, event, 1)
        for step in (RESERVE, CHARGE, CONFIRM, NOTIFY)
        for event in ("STARTED", "SUCCEEDED")
    ]
    assert_confirmed_once(world, booking.booking_id)
    assert world.participants.operations() == [
        "reserve_seats",
        "charge",
        "confirm_reservation",
        "send_notification",
    ]
    # Every call carries the configured deadline.
    assert {c.deadline for c in world.participants.calls} == {2.0}


@pytest.mark.parametrize(
    ("operation", "step"),
    [
        ("reserve_seats", RESERVE),
        ("charge", CHARGE),
        ("confirm_reservation", CONFIRM),
        ("send_notification", NOTIFY),
    ],
)
@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
async def test_a_transient_error_then_success_is_retried_and_the_saga_goes_forward(
    make_world: MakeWorld, operation: str, step: str, code: str
) -> None:
    world = make_world()
    world.participants.script(operation, transient(code))

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPLETED
    assert [row for row in world.trail(saga.saga_id) if row[0] == step] == [
        (step, "STARTED", 1),
        (step, "RETRYING", 1),
        (step, "STARTED", 2),
        (step, "SUCCEEDED", 2),
    ]
    retrying = [r for r in world.log(saga.saga_id) if r.event.value == "RETRYING"]
    assert [(r.code, r.message) for r in retrying] == [(code, "connection refused")]
    assert len(world.sleep.delays) == 1
    assert 0 < world.sleep.delays[0] <= world.settings.max_backoff_seconds
    assert_confirmed_once(world, booking.booking_id)


async def test_a_lost_reply_at_the_pivot_is_asked_again_and_confirms_once(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("confirm_reservation", lost_reply())

    booking = await booked(world)

    assert world.participants.operations("confirm_reservation") == ["confirm_reservation"] * 2
    assert_confirmed_once(world, booking.booking_id)


async def test_a_lost_reply_of_the_notification_sends_it_once(make_world: MakeWorld) -> None:
    world = make_world()
    world.participants.script("send_notification", lost_reply())

    booking = await booked(world)

    assert world.participants.operations("send_notification") == ["send_notification"] * 2
    assert_confirmed_once(world, booking.booking_id)


# Failures before the pivot: the saga goes back.


# A refusal applies nothing, so a step refused on its only call is not undone; the
# steps before it are, in reverse (tests/unit/booking/test_planner.py has the same rule).
@pytest.mark.parametrize(
    ("operation", "step", "message", "undone", "calls"),
    [
        ("reserve_seats", RESERVE, "sold out", [], ["reserve_seats"]),
        (
            "charge",
            CHARGE,
            "insufficient funds",
            [RESERVE],
            ["reserve_seats", "charge", "release_reservation"],
        ),
    ],
)
async def test_a_step_refused_before_the_pivot_undoes_the_steps_before_it_in_reverse(
    make_world: MakeWorld,
    operation: str,
    step: str,
    message: str,
    undone: list[str],
    calls: list[str],
) -> None:
    world = make_world()
    world.participants.script(operation, refused(message))

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert world.started(saga.saga_id, ACTION)[-1] == step
    assert world.started(saga.saga_id, COMPENSATION) == undone
    # A business refusal is not retried.
    assert (step, "FAILED", 1) in world.trail(saga.saga_id, phase=ACTION)
    assert world.participants.operations() == calls
    assert booking.status is BookingStatus.FAILED
    assert booking.failure_reason == f"{step} failed: FAILED_PRECONDITION: {message}"
    assert_net_zero(world)
    assert world.participants.notifications == {}


# An earlier call that timed out may have been applied, or may still arrive: undone.
@pytest.mark.parametrize("first", [transient(), lost_reply()], ids=["unavailable", "lost_reply"])
async def test_a_step_refused_after_an_unsure_attempt_is_undone_too(
    make_world: MakeWorld, first: Reply
) -> None:
    world = make_world()
    world.participants.script("charge", first, refused("insufficient funds"))

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert world.started(saga.saga_id, COMPENSATION) == [CHARGE, RESERVE]
    assert world.participants.operations() == [
        "reserve_seats",
        "charge",
        "charge",
        "refund",
        "release_reservation",
    ]
    assert booking.status is BookingStatus.FAILED
    assert_net_zero(world)


# INTERNAL says nothing of what the participant did before it failed: undone.
async def test_a_step_failed_with_internal_on_its_only_call_is_undone(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("reserve_seats", refused("boom", code="INTERNAL"))

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert world.started(saga.saga_id, COMPENSATION) == [RESERVE]
    assert world.participants.operations() == ["reserve_seats", "release_reservation"]
    assert booking.status is BookingStatus.FAILED
    assert_net_zero(world)


async def test_a_refused_pivot_refunds_and_releases(make_world: MakeWorld) -> None:
    world = make_world()
    world.participants.on_call("confirm_reservation", world.participants.expire_holds)

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert world.started(saga.saga_id, COMPENSATION) == [CHARGE, RESERVE]
    assert booking.status is BookingStatus.FAILED
    assert booking.failure_reason == "confirm_seats failed: FAILED_PRECONDITION: hold expired"
    assert world.participants.operations()[-2:] == ["refund", "release_reservation"]
    assert world.participants.charges[next(iter(world.participants.charges))].state == "REFUNDED"
    assert_net_zero(world)
    assert world.participants.notifications == {}


# DEADLINE_EXCEEDED on every attempt: the step may or may not have happened. A reply
# that is late arrives after the saga gave up, and must then be refused.
@pytest.mark.parametrize(("operation", "step"), [("reserve_seats", RESERVE), ("charge", CHARGE)])
@pytest.mark.parametrize(
    "reply", [lost_reply(), timed_out(), timed_out(late=True)], ids=["applied", "not", "late"]
)
async def test_an_unknown_outcome_until_the_budget_is_spent_is_undone_whatever_happened(
    make_world: MakeWorld, operation: str, step: str, reply: Reply
) -> None:
    world = make_world()
    world.participants.script(operation, reply, reply, reply)

    booking = await booked(world)
    await world.participants.deliver_late()

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert [row for row in world.trail(saga.saga_id, phase=ACTION) if row[0] == step] == [
        (step, event, attempt) for attempt in (1, 2, 3) for event in ("STARTED", "RETRYING")
    ]
    assert world.started(saga.saga_id, COMPENSATION)[0] == step
    assert booking.status is BookingStatus.FAILED
    assert booking.failure_reason == (
        f"{step} spent its 3 attempts: DEADLINE_EXCEEDED: deadline exceeded"
    )
    assert_net_zero(world)
    if reply.late:
        assert [code for _, _, code in world.participants.late_calls] == ["ABORTED"] * 3


# Failures after the pivot: the saga only goes forward, or parks for an operator.


async def test_a_step_after_the_pivot_failing_past_its_limit_parks_the_saga_stuck(
    make_world: MakeWorld,
) -> None:
    world = make_world(give_up_after_seconds=0.001)
    world.participants.script("send_notification", then=transient())

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert (
        saga.note == "notify kept failing for 0.001 s; last reply UNAVAILABLE: connection refused"
    )
    assert saga.current_step == NOTIFY
    assert booking.status is BookingStatus.CONFIRMED
    assert world.app.engine.running == frozenset()
    # Parked, not live: recovery leaves it for an operator.
    assert await world.app.engine.recover(include_own=True) == 0


async def test_a_step_resumed_after_its_limit_passed_parks_at_its_next_failure(
    make_world: MakeWorld,
) -> None:
    world = make_world(crash_hook=CrashAt("booking.confirm_seats.action.before_call"))
    booking = await booked(world)
    world.participants.script("confirm_reservation", then=transient())
    world.clock.advance(world.settings.give_up_after_seconds + 1)

    resumed = world.start()
    assert await resumed.engine.recover(include_own=True) == 1
    await world.settle()

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert saga.note.startswith("confirm_seats kept failing for 3600 s; last reply UNAVAILABLE")
    assert world.participants.operations("confirm_reservation") == ["confirm_reservation"]
    assert world.booking(booking.booking_id).status is BookingStatus.PENDING

    # An operator's retry gives the step its whole limit again, not a single try.
    world.participants.script("confirm_reservation", transient(), then=OK)
    await resumed.handlers.retry_saga(saga.saga_id)
    await world.settle()

    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    operator_rows = [r for r in world.log(saga.saga_id) if r.code == "OPERATOR"]
    assert [(r.step, r.event.value) for r in operator_rows] == [(CONFIRM, "RETRYING")]
    assert world.participants.operations("confirm_reservation") == ["confirm_reservation"] * 3
    assert_confirmed_once(world, booking.booking_id)


async def test_an_operator_retry_of_a_step_parked_by_errors_gets_its_whole_limit_again(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("confirm_reservation", then=broken(RuntimeError("client bug")))
    booking = await booked(world)
    await recover_until_idle(world, 2)
    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    # The operator comes back after longer than the step's limit.
    world.clock.advance(world.settings.give_up_after_seconds + 1)
    world.participants.script("confirm_reservation", transient(), then=OK)

    await world.app.handlers.retry_saga(saga.saga_id)
    await world.settle()

    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    assert_confirmed_once(world, booking.booking_id)


class RanAway(BaseException):
    """The engine kept retrying long past its limit."""


async def test_the_limit_of_a_persistent_step_is_measured_on_the_engine_clock(
    make_world: MakeWorld,
) -> None:
    world: World

    async def sleep_on_the_clock(seconds: float) -> None:
        world.clock.advance(seconds)
        if world.clock.now - START > timedelta(seconds=600):
            raise RanAway

    world = make_world(give_up_after_seconds=60, sleep=sleep_on_the_clock)
    world.participants.script("send_notification", then=transient())

    booking = await booked(world)

    assert world.saga(booking.booking_id).status is SagaStatus.STUCK


# Crashes: any point, then another start of the same process resumes from the log.

POINTS = crash.every_point(definitions(settings()).values())
# The crash comes after the saga's last write: there is nothing left to resume.
AFTER_THE_END = {
    "booking.notify.action.after_log",
    "booking.reserve_seats.compensation.after_log",
    "cancel.notify.action.after_log",
}


@pytest.mark.parametrize("point", POINTS)
async def test_a_crash_at_any_point_resumes_to_one_clean_end_and_never_charges_twice(
    make_world: MakeWorld, point: str
) -> None:
    kind, _, phase, _ = point.split(".")
    hook = CrashAt(point)
    world = make_world(crash_hook=hook)
    if phase == "compensation":
        world.participants.on_call("confirm_reservation", world.participants.expire_holds)
    booking = await booked(world)
    if kind == "cancel":
        await world.app.handlers.cancel_booking(booking.booking_id)
        await world.settle()

    assert hook.fired
    assert world.app.engine.running == frozenset()
    resumed = world.start()
    claimed = await resumed.engine.recover(include_own=True)
    await world.settle()

    assert claimed == (0 if point in AFTER_THE_END else 1)
    p = world.participants
    # One charge key per booking, so a charge repeated after a crash applies once.
    assert len(p.charges_for(booking.booking_id)) == 1
    assert p.balances[world.account_id] == p.OPENING_BALANCE - p.net_charged(world.account_id)
    if kind == "cancel":
        assert world.booking(booking.booking_id).status is BookingStatus.CANCELLED
        assert world.saga(booking.booking_id, "cancel").status is SagaStatus.COMPLETED
        assert_net_zero(world)
        kinds = sorted(n.kind for n in p.notifications.values())
        assert kinds == ["booking_cancelled", "booking_confirmed"]
    elif phase == "compensation":
        assert world.booking(booking.booking_id).status is BookingStatus.FAILED
        assert world.saga(booking.booking_id).status is SagaStatus.COMPENSATED
        assert_net_zero(world)
        assert p.notifications == {}
    else:
        assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
        assert_confirmed_once(world, booking.booking_id)


async def test_a_crash_loop_before_the_pivot_spends_the_budget_and_compensates(
    make_world: MakeWorld,
) -> None:
    world = make_world(crash_hook=CrashAt("booking.charge_account.action.after_call"))
    booking = await booked(world)
    for _ in range(2):
        again = world.start(crash_hook=CrashAt("booking.charge_account.action.after_call"))
        assert await again.engine.recover(include_own=True) == 1
        await world.settle()

    last = world.start()
    assert await last.engine.recover(include_own=True) == 1
    await world.settle()

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert world.booking(booking.booking_id).failure_reason == "charge_account spent its 3 attempts"
    assert world.participants.operations("charge") == ["charge"] * 3
    assert_net_zero(world)


# Cancelling.


@pytest.mark.parametrize(
    ("in_flight", "undone", "calls"),
    [
        (None, [RESERVE], ["reserve_seats", "release_reservation"]),
        ("reserve_seats", [RESERVE], ["reserve_seats", "release_reservation"]),
        ("charge", [CHARGE, RESERVE], ["reserve_seats", "charge", "refund", "release_reservation"]),
    ],
    ids=["before_the_first_call", "during_reserve", "during_charge"],
)
async def test_cancelling_a_pending_booking_compensates_at_the_next_step_boundary(
    make_world: MakeWorld, in_flight: str | None, undone: list[str], calls: list[str]
) -> None:
    world = make_world()
    booking = await world.book()

    async def cancel() -> None:
        cancelling = await world.app.handlers.cancel_booking(booking.booking_id)
        assert cancelling.status is BookingStatus.CANCELLING

    if in_flight is None:
        await cancel()
    else:
        world.participants.on_call(in_flight, cancel)
    await world.settle()

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.cancel_requested
    assert world.started(saga.saga_id, COMPENSATION) == undone
    assert world.participants.operations() == calls
    stored = world.booking(booking.booking_id)
    assert (stored.status, stored.failure_reason) == (BookingStatus.CANCELLED, "")
    assert_net_zero(world)
    assert world.participants.notifications == {}


async def test_cancelling_while_the_pivot_is_in_flight_goes_forward_then_runs_the_cancel_saga(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    booking = await world.book()

    async def cancel() -> None:
        await world.app.handlers.cancel_booking(booking.booking_id)

    world.participants.on_call("confirm_reservation", cancel)
    await world.settle()

    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    cancel_saga = world.saga(booking.booking_id, "cancel")
    assert cancel_saga.status is SagaStatus.COMPLETED
    assert world.trail(cancel_saga.saga_id) == [
        (step, event, 1) for step in (RELEASE, REFUND, NOTIFY) for event in ("STARTED", "SUCCEEDED")
    ]
    assert world.booking(booking.booking_id).status is BookingStatus.CANCELLED
    assert_net_zero(world)
    assert world.participants.operations()[-3:] == [
        "release_reservation",
        "refund",
        "send_notification",
    ]


async def test_cancelling_a_confirmed_booking_releases_refunds_and_notifies_again(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    booking = await booked(world)

    cancelled = await world.app.handlers.cancel_booking(booking.booking_id, wait=5)

    assert cancelled.status is BookingStatus.CANCELLED
    sagas = world.store.sagas_of(booking.booking_id)
    assert [(s.kind, s.status) for s in sagas] == [
        ("booking", SagaStatus.COMPLETED),
        ("cancel", SagaStatus.COMPLETED),
    ]
    p = world.participants
    assert p.seats("RELEASED") == 2
    assert_net_zero(world)
    assert p.balances[world.account_id] == p.OPENING_BALANCE
    assert [n.kind for n in p.notifications.values()] == ["booking_confirmed", "booking_cancelled"]
    # The cancel saga names what the booking saga made: the same reservation and charge key.
    reserve, charge = p.calls[0], p.calls[1]
    assert [c.key for c in p.calls if c.operation == "release_reservation"] == [reserve.key]
    assert [c.key for c in p.calls if c.operation == "refund"] == [charge.key]


async def test_cancelling_twice_runs_one_cancel_saga(make_world: MakeWorld) -> None:
    world = make_world()
    booking = await booked(world)

    first = await world.app.handlers.cancel_booking(booking.booking_id)
    second = await world.app.handlers.cancel_booking(booking.booking_id)
    await world.settle()
    third = await world.app.handlers.cancel_booking(booking.booking_id)

    assert (first.status, second.status) == (BookingStatus.CANCELLING, BookingStatus.CANCELLING)
    assert third.status is BookingStatus.CANCELLED
    assert [s.kind for s in world.store.sagas_of(booking.booking_id)] == ["booking", "cancel"]
    assert world.participants.operations("refund") == ["refund"]


# Leases and replicas.


async def claim_by_another_replica(world: World) -> list[SagaInstance]:
    """Another replica claims every saga whose lease ran out."""
    now = world.clock()
    async with FakeUnitOfWork(world.store) as uow:
        claimed = await uow.sagas.claim(
            "replica-b", now=now, lease_until=now + timedelta(seconds=30), limit=10
        )
        await uow.commit()
    return claimed


async def test_a_saga_whose_lease_was_taken_stops_at_its_next_write_without_writing(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    gate = world.participants.gate("charge")
    booking = await world.book()
    await gate.reached.wait()
    world.clock.advance(world.settings.lease_seconds + 1)
    taken = await claim_by_another_replica(world)
    assert [s.booking_id for s in taken] == [booking.booking_id]
    rows = list(world.store.rows)

    gate.open()
    await world.app.engine.wait_idle()

    assert world.store.rows == rows
    saga = world.saga(booking.booking_id)
    assert (saga.owner, saga.version, saga.status) == (
        "replica-b",
        taken[0].version,
        SagaStatus.RUNNING,
    )
    # The new owner finishes it; the charge the old one made is not made again.
    other = world.start(owner="replica-b")
    assert await other.engine.recover(include_own=True) == 1
    await world.settle()
    assert_confirmed_once(world, booking.booking_id)
    assert world.participants.operations("charge") == ["charge", "charge"]
    assert {row.owner for row in world.store.rows_of(saga.saga_id)[len(rows) :]} == {"replica-b"}


async def test_renewing_leases_stops_a_saga_another_replica_took(make_world: MakeWorld) -> None:
    world = make_world()
    gate = world.participants.gate("charge")
    booking = await world.book()
    await gate.reached.wait()
    world.clock.advance(world.settings.lease_seconds + 1)
    await claim_by_another_replica(world)
    rows = list(world.store.rows)

    await world.app.engine.renew_leases()
    await world.app.engine.wait_idle()

    assert world.app.engine.running == frozenset()
    assert world.store.rows == rows
    assert world.participants.charges == {}
    assert world.saga(booking.booking_id).owner == "replica-b"


async def test_renewing_leases_keeps_the_version_the_next_write_is_guarded_by(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    gate = world.participants.gate("charge")
    booking = await world.book()
    await gate.reached.wait()
    before = world.saga(booking.booking_id)

    world.clock.advance(world.settings.lease_seconds / 2)
    await world.app.engine.renew_leases()

    renewed = world.saga(booking.booking_id)
    assert renewed.version == before.version
    assert before.lease_expires_at is not None
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > before.lease_expires_at
    gate.open()
    await world.settle()
    assert_confirmed_once(world, booking.booking_id)


async def test_a_stopped_process_hands_its_sagas_to_another_at_once(make_world: MakeWorld) -> None:
    world = make_world()
    gate = world.participants.gate("charge")
    booking = await world.book()
    await gate.reached.wait()

    await world.app.engine.stop()

    assert world.saga(booking.booking_id).lease_expires_at is None
    other = world.start(owner="replica-b")
    assert await other.engine.recover() == 1
    await world.settle()
    assert_confirmed_once(world, booking.booking_id)
    assert world.saga(booking.booking_id).owner == "replica-b"


# Errors in the engine itself, and an operator's repairs.


async def recover_until_idle(world: World, times: int) -> None:
    for _ in range(times):
        assert await world.app.engine.recover(include_own=True) == 1
        await world.settle()


async def test_an_engine_error_repeated_park_after_errors_times_parks_the_saga_stuck(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("confirm_reservation", then=broken(RuntimeError("client bug")))
    booking = await booked(world)

    await recover_until_idle(world, 2)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert saga.note == "parked after 3 errors: client bug"
    assert world.participants.operations("confirm_reservation") == ["confirm_reservation"] * 3
    assert world.booking(booking.booking_id).status is BookingStatus.PENDING
    assert await world.app.engine.recover(include_own=True) == 0


async def test_a_database_outage_never_parks_a_saga(make_world: MakeWorld) -> None:
    world = make_world()
    outage = sa_exc.OperationalError("UPDATE saga", {}, ConnectionError("server closed"))
    world.store.fail_appends = [outage] * 3

    booking = await booked(world)
    for _ in range(3):
        if world.saga(booking.booking_id).status not in LIVE:
            break
        # Paused rather than retried in place: recovery picks it up again.
        assert await world.app.engine.recover(include_own=True) == 1
        await world.settle()

    assert world.store.fail_appends == []
    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    assert_confirmed_once(world, booking.booking_id)


async def test_a_statement_failing_park_after_errors_times_parks_the_saga(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.store.fail_appends = [RuntimeError("a statement the database refused")] * 3
    booking = await booked(world)

    await recover_until_idle(world, 2)

    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert saga.note == "parked after 3 errors: a statement the database refused"
    assert world.booking(booking.booking_id).status is BookingStatus.PENDING


async def test_an_operator_retry_of_a_parked_saga_goes_forward(make_world: MakeWorld) -> None:
    world = make_world()
    world.participants.script("confirm_reservation", then=broken(RuntimeError("client bug")))
    booking = await booked(world)
    await recover_until_idle(world, 2)
    saga = world.saga(booking.booking_id)
    world.participants.script("confirm_reservation", then=OK)

    taken = await world.app.handlers.retry_saga(saga.saga_id)
    await world.settle()

    assert taken.status is SagaStatus.RUNNING
    assert taken.note.startswith("an operator asked to retry")
    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    assert ("confirm_seats", "SUCCEEDED", 4) in world.trail(saga.saga_id)
    assert_confirmed_once(world, booking.booking_id)


async def test_an_operator_compensation_of_a_parked_saga_undoes_it(make_world: MakeWorld) -> None:
    world = make_world()
    world.participants.script("charge", then=broken(RuntimeError("client bug")))
    booking = await booked(world)
    await recover_until_idle(world, 2)
    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK

    taken = await world.app.handlers.compensate_saga(saga.saga_id)
    await world.settle()

    assert taken.status is SagaStatus.COMPENSATING
    assert world.saga(booking.booking_id).status is SagaStatus.COMPENSATED
    assert world.started(saga.saga_id, COMPENSATION) == [CHARGE, RESERVE]
    stored = world.booking(booking.booking_id)
    assert stored.status is BookingStatus.FAILED
    assert stored.failure_reason.startswith("compensated by an operator: an operator asked to")
    assert_net_zero(world)


# An operator's retry of a compensating saga reopens its compensation, never the refused
# action that made it compensate (an action row after compensation would not read).
async def test_a_refused_compensation_parks_the_saga_and_an_operator_retry_finishes_it(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("charge", refused("insufficient funds"))
    world.participants.script("release_reservation", refused("event is locked"))
    booking = await booked(world)
    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert saga.note == "the compensation of reserve_seats was refused"
    assert world.participants.seats("HELD") == 2

    await world.app.handlers.retry_saga(saga.saga_id)
    await world.settle()

    assert world.saga(booking.booking_id).status is SagaStatus.COMPENSATED
    assert world.trail(saga.saga_id, phase=COMPENSATION)[-4:] == [
        (RESERVE, "FAILED", 1),
        (RESERVE, "RETRYING", 1),
        (RESERVE, "STARTED", 2),
        (RESERVE, "SUCCEEDED", 2),
    ]
    stored = world.booking(booking.booking_id)
    assert stored.status is BookingStatus.FAILED
    assert stored.failure_reason == "charge_account failed: FAILED_PRECONDITION: insufficient funds"
    assert_net_zero(world)


async def test_a_compensation_failing_past_its_limit_parks_and_an_operator_retry_finishes_it(
    make_world: MakeWorld,
) -> None:
    world = make_world(give_up_after_seconds=0.001)
    world.participants.script("charge", timed_out(), timed_out(), timed_out())
    world.participants.script("release_reservation", then=transient())
    booking = await booked(world)
    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert saga.note.startswith("reserve_seats kept failing for 0.001 s; last reply UNAVAILABLE")
    world.participants.script("release_reservation", then=OK)

    taken = await world.app.handlers.retry_saga(saga.saga_id)
    await world.settle()

    assert taken.status is SagaStatus.COMPENSATING
    assert world.saga(booking.booking_id).status is SagaStatus.COMPENSATED
    stored = world.booking(booking.booking_id)
    assert stored.status is BookingStatus.FAILED
    assert stored.failure_reason == (
        "charge_account spent its 3 attempts: DEADLINE_EXCEEDED: deadline exceeded"
    )
    assert_net_zero(world)


async def test_a_saga_past_its_pivot_can_be_retried_but_not_compensated(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("send_notification", refused("no such address"))
    booking = await booked(world)
    saga = world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    assert saga.note == "notify was refused and saga booking cannot go back"

    with pytest.raises(FailedPrecondition, match="passed its pivot"):
        await world.app.handlers.compensate_saga(saga.saga_id)
    await world.app.handlers.retry_saga(saga.saga_id)
    await world.settle()

    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    assert_confirmed_once(world, booking.booking_id)
    with pytest.raises(FailedPrecondition, match="only a STUCK saga"):
        await world.app.handlers.retry_saga(saga.saga_id)


# The summaries an operator reads.


async def test_the_charge_is_logged_with_the_amount_it_charges(make_world: MakeWorld) -> None:
    world = make_world()
    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    charge_started = next(
        r for r in world.log(saga.saga_id) if r.step == CHARGE and r.event.value == "STARTED"
    )
    assert charge_started.request_summary["amount_cents"] == AMOUNT


async def test_a_retried_charge_sends_and_logs_the_priced_request_on_every_attempt(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    world.participants.script("charge", transient(), lost_reply())

    booking = await booked(world)

    saga = world.saga(booking.booking_id)
    started = [
        r.request_summary
        for r in world.log(saga.saga_id)
        if r.step == CHARGE and r.event.value == "STARTED"
    ]
    assert len(started) == 3
    assert all(summary == started[0] for summary in started)
    assert started[0]["amount_cents"] == AMOUNT
    charges = [c for c in world.participants.calls if c.operation == "charge"]
    assert {c.key for c in charges} == {started[0]["idempotency_key"]}
    assert_confirmed_once(world, booking.booking_id)


async def test_a_saga_that_cannot_be_loaded_is_parked_after_repeated_errors(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    booking = await booked(world)
    now = world.clock()
    unknown = SagaInstance(
        saga_id=uuid.uuid4(),
        kind="gift_card",
        booking_id=booking.booking_id,
        status=SagaStatus.RUNNING,
        current_step="wrap",
        owner=world.settings.instance_id,
        lease_expires_at=now,
        created_at=now,
        updated_at=now,
    )
    world.store.sagas[unknown.saga_id] = unknown

    for _ in range(4):
        await world.app.engine.recover(include_own=True)
        await world.settle()

    assert world.store.sagas[unknown.saga_id].status is SagaStatus.STUCK


# The fakes keep the SQL repository's rules, so the tests above mean something.


async def test_the_fake_unit_of_work_shows_changes_only_after_commit(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    gate = world.participants.gate("reserve_seats")
    booking = await world.book()
    await gate.reached.wait()
    saga = world.saga(booking.booking_id)
    rows = list(world.store.rows)

    async with FakeUnitOfWork(world.store) as uow:
        await uow.sagas.request_cancel(booking.booking_id)
        loaded, _ = await uow.sagas.load(saga.saga_id)
        assert loaded.cancel_requested
    async with FakeUnitOfWork(world.store) as uow:
        written = await uow.sagas.append_txn(
            saga.saga_id, owner=saga.owner or "", version=saga.version, now=world.clock()
        )
        assert written.version == saga.version + 1
        assert world.saga(booking.booking_id) == saga

    assert world.saga(booking.booking_id) == saga
    assert world.store.rows == rows
    assert world.store.rollbacks == 2
    gate.open()
    await world.settle()


async def test_the_fake_repository_guards_writes_and_keeps_the_version_for_a_cancel(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    gate = world.participants.gate("reserve_seats")
    booking = await world.book()
    await gate.reached.wait()
    saga = world.saga(booking.booking_id)

    async with FakeUnitOfWork(world.store) as uow:
        with pytest.raises(LeaseLost):
            await uow.sagas.append_txn(
                saga.saga_id, owner="replica-b", version=saga.version, now=world.clock()
            )
        with pytest.raises(LeaseLost):
            await uow.sagas.append_txn(
                saga.saga_id, owner=saga.owner or "", version=saga.version - 1, now=world.clock()
            )
        assert await uow.sagas.request_cancel(booking.booking_id)
        assert not await uow.sagas.request_cancel(uuid.uuid4())
        await uow.commit()

    flagged = world.saga(booking.booking_id)
    assert flagged.cancel_requested
    assert flagged.version == saga.version
    gate.open()
    await world.settle()
    assert world.booking(booking.booking_id).status is BookingStatus.CANCELLED
