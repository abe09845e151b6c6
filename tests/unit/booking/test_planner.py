"""The planner, given a log, expects the engine's next moves (eventuate's given/expect style)."""

from __future__ import annotations

import pytest

from booking_svc.domain.log import LogMismatch
from booking_svc.domain.planner import (
    Compensated,
    Complete,
    Move,
    RunAction,
    RunCompensation,
    StartCompensating,
    Stuck,
    can_compensate,
    plan,
)
from booking_svc.domain.saga import BOOKING_SAGA, CANCEL_SAGA, Step, call_key
from booking_svc.domain.states import SagaStatus, StepEvent, StepPhase
from tests.unit.booking.sim import Engine, Outcome, SagaLog, scripted

RESERVE, CHARGE, CONFIRM, NOTIFY = BOOKING_SAGA.steps
RELEASE, REFUND, CANCEL_NOTIFY = CANCEL_SAGA.steps
ACTION, COMPENSATION = StepPhase.ACTION, StepPhase.COMPENSATION
OK, REFUSED, TRANSIENT, CRASH = Outcome.SUCCESS, Outcome.REFUSED, Outcome.TRANSIENT, Outcome.CRASH


def next_move(
    log: SagaLog, *, status: SagaStatus = SagaStatus.RUNNING, cancel: bool = False
) -> Move:
    return plan(BOOKING_SAGA, log.entries, status=status, cancel_requested=cancel)


def test_a_booking_with_no_failures_runs_every_step_once_and_completes() -> None:
    engine = Engine(BOOKING_SAGA)

    assert engine.run() == [
        RunAction(RESERVE, 1),
        RunAction(CHARGE, 1),
        RunAction(CONFIRM, 1),
        RunAction(NOTIFY, 1),
        Complete(),
    ]
    assert engine.status is SagaStatus.COMPLETED


# A refusal applies nothing, so a step refused on its one call is not compensated; the
# steps before it are, in reverse (a refusal after an unsure call is another matter, below).
@pytest.mark.parametrize(
    ("refused", "expected"),
    [
        (
            RESERVE,
            [
                RunAction(RESERVE, 1),
                StartCompensating("reserve_seats failed"),
                Compensated(),
            ],
        ),
        (
            CHARGE,
            [
                RunAction(RESERVE, 1),
                RunAction(CHARGE, 1),
                StartCompensating("charge_account failed"),
                RunCompensation(RESERVE, 1),
                Compensated(),
            ],
        ),
        (
            CONFIRM,
            [
                RunAction(RESERVE, 1),
                RunAction(CHARGE, 1),
                RunAction(CONFIRM, 1),
                StartCompensating("confirm_seats failed"),
                RunCompensation(CHARGE, 1),
                RunCompensation(RESERVE, 1),
                Compensated(),
            ],
        ),
    ],
    ids=["reserve_seats", "charge_account", "confirm_seats"],
)
def test_a_step_refused_up_to_the_pivot_undoes_every_earlier_step_in_reverse(
    refused: Step, expected: list[Move]
) -> None:
    engine = Engine(BOOKING_SAGA, outcomes=scripted({(refused.name, ACTION): [REFUSED]}))

    assert engine.run() == expected
    assert engine.status is SagaStatus.COMPENSATED


def test_a_transient_failure_followed_by_success_goes_on_forward() -> None:
    engine = Engine(BOOKING_SAGA, outcomes=scripted({("charge_account", ACTION): [TRANSIENT]}))

    assert engine.run() == [
        RunAction(RESERVE, 1),
        RunAction(CHARGE, 1),
        RunAction(CHARGE, 2),
        RunAction(CONFIRM, 1),
        RunAction(NOTIFY, 1),
        Complete(),
    ]


def test_a_crash_after_started_reruns_the_same_step_with_the_next_attempt_and_same_key() -> None:
    log = SagaLog()
    log.call("reserve_seats", OK)
    log.call("charge_account", CRASH)

    assert next_move(log) == RunAction(CHARGE, 2)
    # The key names saga and step, never the attempt, so the repeated Charge applies once.
    key = call_key(
        CHARGE.action, saga_id=log.saga_id, booking_saga_id=log.saga_id, step_name=CHARGE.name
    )
    assert key == f"{log.saga_id}:charge_account"


def test_a_recorded_success_short_circuits_its_step_on_resume() -> None:
    log = SagaLog()
    log.call("reserve_seats", OK)
    log.call("charge_account", OK)

    assert next_move(log) == RunAction(CONFIRM, 1)


def test_a_spent_budget_compensates_including_the_step_whose_outcome_is_unknown() -> None:
    engine = Engine(BOOKING_SAGA, outcomes=scripted({("charge_account", ACTION): [TRANSIENT] * 5}))

    assert engine.run()[-4:] == [
        StartCompensating("charge_account spent its 5 attempts"),
        RunCompensation(CHARGE, 1),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]
    assert len(engine.log.rows("charge_account", ACTION, StepEvent.STARTED)) == 5


def test_crashes_spend_the_budget_too_so_a_crash_loop_ends_in_compensation() -> None:
    log = SagaLog()
    for attempt in range(1, 6):
        log.call("reserve_seats", CRASH, attempt=attempt)

    assert next_move(log) == StartCompensating("reserve_seats spent its 5 attempts")


def test_a_compensation_that_fails_transiently_is_retried_with_its_own_attempts() -> None:
    engine = Engine(
        BOOKING_SAGA,
        outcomes=scripted(
            {
                ("charge_account", ACTION): [CRASH, REFUSED],
                ("charge_account", COMPENSATION): [TRANSIENT, CRASH],
            }
        ),
    )

    assert engine.run()[3:] == [
        StartCompensating("charge_account failed"),
        RunCompensation(CHARGE, 1),
        RunCompensation(CHARGE, 2),
        RunCompensation(CHARGE, 3),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]


def test_a_refusal_after_a_call_that_may_have_applied_undoes_the_step_too() -> None:
    engine = Engine(BOOKING_SAGA, outcomes=scripted({("charge_account", ACTION): [CRASH, REFUSED]}))

    assert engine.run()[-4:] == [
        StartCompensating("charge_account failed"),
        RunCompensation(CHARGE, 1),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]


def test_a_compensation_begun_for_a_refused_step_is_finished() -> None:
    # A log from before refusals were known to apply nothing: its refund was under way.
    log = SagaLog()
    log.call("reserve_seats", OK)
    log.call("charge_account", REFUSED)
    log.append("charge_account", StepEvent.STARTED, phase=COMPENSATION, attempt=1)

    assert Engine(BOOKING_SAGA, log=log, status=SagaStatus.COMPENSATING).run() == [
        RunCompensation(CHARGE, 2),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]


def test_a_step_whose_action_never_started_is_not_compensated() -> None:
    log = SagaLog()
    log.call("reserve_seats", OK)

    moves = Engine(BOOKING_SAGA, log=log, cancel_requested=True).run()

    assert moves == [
        StartCompensating("cancel requested"),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]
    assert not log.started("charge_account", phase=COMPENSATION)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            REFUSED,
            [
                RunAction(NOTIFY, 1),
                Stuck("notify was refused and saga booking cannot go back"),
                RunAction(NOTIFY, 2),
                Complete(),
            ],
        ),
        (TRANSIENT, [RunAction(NOTIFY, 1), RunAction(NOTIFY, 2), Complete()]),
        (CRASH, [RunAction(NOTIFY, 1), RunAction(NOTIFY, 2), Complete()]),
    ],
)
def test_after_the_pivot_succeeded_failures_never_lead_to_compensation(
    outcome: Outcome, expected: list[Move]
) -> None:
    engine = Engine(BOOKING_SAGA, outcomes=scripted({("notify", ACTION): [outcome]}))

    assert engine.run(operator_retries=True)[3:] == expected


def test_a_refused_step_after_the_pivot_parks_the_saga_until_an_operator_retries() -> None:
    engine = Engine(BOOKING_SAGA, outcomes=scripted({("notify", ACTION): [REFUSED]}))

    assert engine.run()[-2:] == [
        RunAction(NOTIFY, 1),
        Stuck("notify was refused and saga booking cannot go back"),
    ]
    assert engine.status is SagaStatus.STUCK
    assert not can_compensate(BOOKING_SAGA, engine.log.entries)

    engine.operator_retry()

    assert engine.run() == [RunAction(NOTIFY, 2), Complete()]


def test_a_refused_compensation_parks_the_saga_and_a_retry_resumes_compensating() -> None:
    engine = Engine(
        BOOKING_SAGA,
        outcomes=scripted(
            {("charge_account", ACTION): [REFUSED], ("reserve_seats", COMPENSATION): [REFUSED]}
        ),
    )

    assert engine.run()[-1] == Stuck("the compensation of reserve_seats was refused")

    engine.operator_retry()

    assert engine.status is SagaStatus.COMPENSATING
    assert engine.run() == [RunCompensation(RESERVE, 2), Compensated()]


def test_a_compensating_saga_whose_pivot_succeeded_is_a_log_mismatch() -> None:
    log = SagaLog()
    for name in ("reserve_seats", "charge_account", "confirm_seats"):
        log.call(name, OK)

    assert not can_compensate(BOOKING_SAGA, log.entries)
    with pytest.raises(LogMismatch, match="cannot be undone"):
        next_move(log, status=SagaStatus.COMPENSATING)


@pytest.mark.parametrize("done", [0, 1, 2])
def test_a_cancel_before_the_pivot_compensates_at_the_next_step_boundary(done: int) -> None:
    log = SagaLog()
    for step in BOOKING_SAGA.steps[:done]:
        log.call(step.name, OK)

    moves = Engine(BOOKING_SAGA, log=log, cancel_requested=True).run()

    undo = [RunCompensation(step, 1) for step in reversed(BOOKING_SAGA.steps[:done])]
    assert moves == [StartCompensating("cancel requested"), *undo, Compensated()]


def test_a_cancel_while_a_step_before_the_pivot_is_in_flight_undoes_that_step_too() -> None:
    log = SagaLog()
    log.call("reserve_seats", OK)
    log.call("charge_account", CRASH)

    moves = Engine(BOOKING_SAGA, log=log, cancel_requested=True).run()

    assert moves == [
        StartCompensating("cancel requested"),
        RunCompensation(CHARGE, 1),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]


def test_a_cancel_while_the_pivot_is_in_flight_waits_for_the_pivot() -> None:
    log = SagaLog()
    log.call("reserve_seats", OK)
    log.call("charge_account", OK)
    log.call("confirm_seats", TRANSIENT)

    assert next_move(log, cancel=True) == RunAction(CONFIRM, 2)
    # The pivot may still be refused, and then there is nothing to wait for.
    log.call("confirm_seats", REFUSED, attempt=2)
    assert next_move(log, cancel=True) == StartCompensating("confirm_seats failed")


def test_a_cancel_after_the_pivot_does_not_compensate() -> None:
    log = SagaLog()
    for name in ("reserve_seats", "charge_account", "confirm_seats"):
        log.call(name, OK)

    assert Engine(BOOKING_SAGA, log=log, cancel_requested=True).run() == [
        RunAction(NOTIFY, 1),
        Complete(),
    ]


def test_the_cancel_saga_runs_forward_only() -> None:
    engine = Engine(CANCEL_SAGA, cancel_requested=True)

    assert engine.run() == [
        RunAction(RELEASE, 1),
        RunAction(REFUND, 1),
        RunAction(CANCEL_NOTIFY, 1),
        Complete(),
    ]


def test_a_refused_first_step_of_the_cancel_saga_parks_it_rather_than_compensating() -> None:
    engine = Engine(CANCEL_SAGA, outcomes=scripted({("release_seats", ACTION): [REFUSED]}))

    assert engine.run() == [
        RunAction(RELEASE, 1),
        Stuck("release_seats was refused and saga cancel cannot go back"),
    ]
    assert not can_compensate(CANCEL_SAGA, engine.log.entries)
    with pytest.raises(LogMismatch, match="cannot be undone"):
        plan(
            CANCEL_SAGA, engine.log.entries, status=SagaStatus.COMPENSATING, cancel_requested=False
        )


def test_an_operator_may_compensate_a_saga_stuck_at_its_pivot() -> None:
    log = SagaLog()
    log.call("reserve_seats", OK)
    log.call("charge_account", OK)
    log.call("confirm_seats", TRANSIENT)

    assert can_compensate(BOOKING_SAGA, log.entries)
    assert Engine(BOOKING_SAGA, log=log, status=SagaStatus.COMPENSATING).run() == [
        RunCompensation(CHARGE, 1),
        RunCompensation(RESERVE, 1),
        Compensated(),
    ]


def test_a_running_saga_whose_log_shows_compensation_is_a_log_mismatch() -> None:
    log = SagaLog()
    log.call("reserve_seats", REFUSED)
    log.call("reserve_seats", OK, phase=COMPENSATION)

    with pytest.raises(LogMismatch, match="RUNNING but its log shows compensation"):
        next_move(log)


@pytest.mark.parametrize("status", [SagaStatus.STUCK, SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
def test_a_saga_that_is_not_running_or_compensating_has_no_next_move(status: SagaStatus) -> None:
    with pytest.raises(ValueError, match=f"a {status.value} saga has no next move"):
        plan(BOOKING_SAGA, [], status=status, cancel_requested=False)
