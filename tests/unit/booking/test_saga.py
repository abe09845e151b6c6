"""Saga definitions refuse unsafe shapes; the two real ones and their participant keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from booking_svc.domain.saga import (
    BOOKING_SAGA,
    CANCEL_SAGA,
    InvalidDefinition,
    Operation,
    RetryKind,
    RetryPolicy,
    SagaDefinition,
    Step,
    call_key,
    charge_key,
    participant_key,
    reservation_id,
)

BUDGETED = RetryPolicy.budgeted()
PERSISTENT = RetryPolicy.persistent()


def undoable(name: str) -> Step:
    return Step(
        name=name,
        action=Operation.CHARGE,
        compensation=Operation.REFUND,
        retry=BUDGETED,
    )


def pivot(name: str) -> Step:
    return Step(name=name, action=Operation.CONFIRM_RESERVATION, retry=PERSISTENT, pivot=True)


def forward(name: str) -> Step:
    return Step(name=name, action=Operation.SEND_NOTIFICATION, retry=PERSISTENT)


def test_the_booking_saga_is_reserve_charge_confirm_notify_with_confirm_as_pivot() -> None:
    assert [step.name for step in BOOKING_SAGA.steps] == [
        "reserve_seats",
        "charge_account",
        "confirm_seats",
        "notify",
    ]
    assert [(s.action, s.compensation) for s in BOOKING_SAGA.steps] == [
        (Operation.RESERVE_SEATS, Operation.RELEASE_RESERVATION),
        (Operation.CHARGE, Operation.REFUND),
        (Operation.CONFIRM_RESERVATION, None),
        (Operation.SEND_NOTIFICATION, None),
    ]
    assert BOOKING_SAGA.pivot_index == BOOKING_SAGA.index("confirm_seats") == 2
    assert [s.retry.kind for s in BOOKING_SAGA.steps] == [
        RetryKind.BUDGETED,
        RetryKind.BUDGETED,
        RetryKind.PERSISTENT,
        RetryKind.PERSISTENT,
    ]
    assert not BOOKING_SAGA.forward_only


def test_the_cancel_saga_only_moves_forward() -> None:
    assert [(s.name, s.action) for s in CANCEL_SAGA.steps] == [
        ("release_seats", Operation.RELEASE_RESERVATION),
        ("refund", Operation.REFUND),
        ("notify", Operation.SEND_NOTIFICATION),
    ]
    assert CANCEL_SAGA.pivot_index == 0
    assert CANCEL_SAGA.forward_only
    assert all(s.compensation is None for s in CANCEL_SAGA.steps)


def test_index_of_an_unknown_step_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no step 'nope'"):
        BOOKING_SAGA.index("nope")


@pytest.mark.parametrize(
    ("steps", "complaint"),
    [
        ((), "at least one step"),
        ((undoable("a"), undoable("a")), "repeats a step name"),
        ((pivot("a"), pivot("b")), "more than one pivot"),
        (
            (
                pivot("a"),
                Step(
                    name="b",
                    action=Operation.CHARGE,
                    compensation=Operation.REFUND,
                    retry=PERSISTENT,
                ),
            ),
            "cannot have a compensation",
        ),
        (
            (
                Step(
                    name="a",
                    action=Operation.CONFIRM_RESERVATION,
                    retry=BUDGETED,
                    pivot=True,
                ),
            ),
            "must retry persistently",
        ),
        ((pivot("a"), Step(name="b", action=Operation.CHARGE, retry=BUDGETED)), "persistently"),
        ((forward("a"), pivot("b")), "needs a compensation"),
        ((forward("a"),), "needs a compensation"),
    ],
)
def test_an_unsafe_definition_is_refused(steps: tuple[Step, ...], complaint: str) -> None:
    with pytest.raises(InvalidDefinition, match=complaint):
        SagaDefinition(kind="test", steps=steps)


def test_a_step_before_the_pivot_may_be_marked_as_having_nothing_to_undo() -> None:
    check = Step(
        name="check", action=Operation.SEND_NOTIFICATION, retry=BUDGETED, no_compensation=True
    )
    saga = SagaDefinition(kind="test", steps=(check, pivot("go")))
    assert saga.pivot_index == 1


def test_a_saga_without_a_pivot_can_always_be_undone() -> None:
    saga = SagaDefinition(kind="test", steps=(undoable("a"), undoable("b")))
    assert saga.pivot_index is None
    assert not saga.forward_only


def test_a_step_cannot_both_have_and_lack_a_compensation() -> None:
    with pytest.raises(InvalidDefinition, match="marked as having none"):
        Step(
            name="a",
            action=Operation.CHARGE,
            compensation=Operation.REFUND,
            retry=BUDGETED,
            no_compensation=True,
        )


def test_a_compensation_must_retry_until_it_succeeds() -> None:
    with pytest.raises(InvalidDefinition, match="retry until it succeeds"):
        Step(
            name="a",
            action=Operation.CHARGE,
            compensation=Operation.REFUND,
            retry=BUDGETED,
            compensation_retry=BUDGETED,
        )


@pytest.mark.parametrize(
    "build",
    [
        lambda: RetryPolicy(kind=RetryKind.BUDGETED, deadline_seconds=1, max_backoff_seconds=1),
        lambda: RetryPolicy.budgeted(attempts=0),
        lambda: RetryPolicy(
            kind=RetryKind.BUDGETED,
            attempts=3,
            give_up_after_seconds=10,
            deadline_seconds=1,
            max_backoff_seconds=1,
        ),
        lambda: RetryPolicy(kind=RetryKind.PERSISTENT, deadline_seconds=1, max_backoff_seconds=1),
        lambda: RetryPolicy.persistent(give_up_after_seconds=0),
        lambda: RetryPolicy(
            kind=RetryKind.PERSISTENT,
            attempts=3,
            give_up_after_seconds=10,
            deadline_seconds=1,
            max_backoff_seconds=1,
        ),
        lambda: RetryPolicy.budgeted(deadline_seconds=0),
        lambda: RetryPolicy.persistent(max_backoff_seconds=-1),
    ],
)
def test_a_retry_policy_that_cannot_be_followed_is_refused(
    build: Callable[[], RetryPolicy],
) -> None:
    with pytest.raises(InvalidDefinition):
        build()


def test_participant_keys_depend_on_saga_and_step_only() -> None:
    saga_id = uuid.uuid4()
    assert participant_key(saga_id, "charge_account") == f"{saga_id}:charge_account"
    assert participant_key(saga_id, "notify") != participant_key(uuid.uuid4(), "notify")


def test_the_reservation_id_is_a_stable_uuid_derived_from_the_booking_saga() -> None:
    saga_id = uuid.uuid4()
    assert (
        reservation_id(saga_id) == reservation_id(saga_id) == uuid.uuid5(saga_id, "reserve_seats")
    )
    assert reservation_id(saga_id) != reservation_id(uuid.uuid4())


def test_the_cancel_saga_releases_and_refunds_what_its_booking_saga_created() -> None:
    booking_saga, cancel_saga = uuid.uuid4(), uuid.uuid4()

    def booking_key(name: str) -> str:
        step = BOOKING_SAGA.steps[BOOKING_SAGA.index(name)]
        return call_key(
            step.action, saga_id=booking_saga, booking_saga_id=booking_saga, step_name=name
        )

    def cancel_key(name: str) -> str:
        step = CANCEL_SAGA.steps[CANCEL_SAGA.index(name)]
        return call_key(
            step.action, saga_id=cancel_saga, booking_saga_id=booking_saga, step_name=name
        )

    reservation = str(reservation_id(booking_saga))
    assert booking_key("reserve_seats") == booking_key("confirm_seats") == reservation
    assert cancel_key("release_seats") == reservation
    assert booking_key("charge_account") == cancel_key("refund") == charge_key(booking_saga)
    assert booking_key("notify") == participant_key(booking_saga, "notify")
    assert cancel_key("notify") == participant_key(cancel_saga, "notify")


def test_a_compensation_uses_the_key_of_the_call_it_undoes() -> None:
    saga_id = uuid.uuid4()
    for step in BOOKING_SAGA.steps:
        if step.compensation is not None:
            undo = call_key(
                step.compensation, saga_id=saga_id, booking_saga_id=saga_id, step_name=step.name
            )
            do = call_key(
                step.action, saga_id=saga_id, booking_saga_id=saga_id, step_name=step.name
            )
            assert undo == do
