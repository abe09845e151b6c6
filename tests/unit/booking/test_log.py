"""Reading the log back: tracks per step, and every kind of row the definition refuses."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest

from booking_svc.domain.log import LogMismatch, Track, advance, read_log
from booking_svc.domain.saga import BOOKING_SAGA
from booking_svc.domain.states import StepEvent, StepPhase
from tests.unit.booking.sim import Outcome, SagaLog

ACTION, COMPENSATION = StepPhase.ACTION, StepPhase.COMPENSATION
STARTED, SUCCEEDED, FAILED, RETRYING = (
    StepEvent.STARTED,
    StepEvent.SUCCEEDED,
    StepEvent.FAILED,
    StepEvent.RETRYING,
)


def test_the_log_reads_back_as_one_track_per_step_and_phase() -> None:
    log = SagaLog()
    log.call("reserve_seats", Outcome.SUCCESS)
    log.call("charge_account", Outcome.CRASH)
    log.call("charge_account", Outcome.TRANSIENT, attempt=2)
    log.call("charge_account", Outcome.REFUSED, attempt=3)
    log.call("charge_account", Outcome.SUCCESS, phase=COMPENSATION)

    progress = read_log(BOOKING_SAGA, log.entries)

    assert progress.actions == (
        Track(attempts=1, last=SUCCEEDED, code="OK"),
        Track(attempts=3, last=FAILED, code="FAILED_PRECONDITION"),
        Track(),
        Track(),
    )
    assert progress.compensations == (
        Track(),
        Track(attempts=1, last=SUCCEEDED, code="OK"),
        Track(),
        Track(),
    )
    assert progress.compensating
    # The refusal came after calls whose outcome is unknown: they may have been applied.
    assert progress.actions[1].may_have_applied


@pytest.mark.parametrize(
    ("code", "applied"),
    [("FAILED_PRECONDITION", False), ("ABORTED", False), ("INTERNAL", True), ("UNKNOWN", True)],
)
def test_only_a_step_refused_on_its_one_call_is_known_to_have_applied_nothing(
    code: str, applied: bool
) -> None:
    log = SagaLog()
    log.call("reserve_seats", Outcome.SUCCESS)
    log.append("charge_account", STARTED, attempt=1)
    log.append("charge_account", FAILED, attempt=1, code=code)

    charge = read_log(BOOKING_SAGA, log.entries).actions[1]

    assert charge.may_have_applied is applied


def test_an_operator_retry_may_follow_a_refusal() -> None:
    log = SagaLog()
    for name in ("reserve_seats", "charge_account", "confirm_seats"):
        log.call(name, Outcome.SUCCESS)
    log.call("notify", Outcome.REFUSED)
    log.append("notify", RETRYING, attempt=1)
    log.call("notify", Outcome.SUCCESS, attempt=2)

    assert read_log(BOOKING_SAGA, log.entries).actions[3] == Track(
        attempts=2, last=SUCCEEDED, code="OK"
    )


def succeeded_through(log: SagaLog, *names: str) -> SagaLog:
    for name in names:
        log.call(name, Outcome.SUCCESS)
    return log


def unknown_step(log: SagaLog) -> None:
    log.append("pay_twice", STARTED, attempt=1)


def compensation_of_a_step_without_one(log: SagaLog) -> None:
    succeeded_through(log, "reserve_seats", "charge_account")
    log.call("confirm_seats", Outcome.REFUSED)
    log.append("confirm_seats", STARTED, phase=COMPENSATION, attempt=1)


def compensation_after_the_pivot_succeeded(log: SagaLog) -> None:
    succeeded_through(log, "reserve_seats", "charge_account", "confirm_seats")
    log.append("charge_account", STARTED, phase=COMPENSATION, attempt=1)


def action_before_the_previous_step_succeeded(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.TRANSIENT)
    log.append("charge_account", STARTED, attempt=1)


def action_after_compensation_began(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.SUCCESS)
    log.call("reserve_seats", Outcome.SUCCESS, phase=COMPENSATION)
    log.append("charge_account", STARTED, attempt=1)


def compensation_of_a_step_that_never_started(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.REFUSED)
    log.append("charge_account", STARTED, phase=COMPENSATION, attempt=1)


def compensations_out_of_reverse_order(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.SUCCESS)
    log.call("charge_account", Outcome.TRANSIENT)
    log.call("charge_account", Outcome.REFUSED, attempt=2)
    log.append("reserve_seats", STARTED, phase=COMPENSATION, attempt=1)


def result_without_a_start(log: SagaLog) -> None:
    log.append("reserve_seats", SUCCEEDED, attempt=1)


def rows_after_success(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.SUCCESS)
    log.append("reserve_seats", STARTED, attempt=2)


def a_start_that_skips_an_attempt(log: SagaLog) -> None:
    log.append("reserve_seats", STARTED, attempt=2)


def a_result_for_another_attempt(log: SagaLog) -> None:
    log.append("reserve_seats", STARTED, attempt=1)
    log.append("reserve_seats", SUCCEEDED, attempt=2)


def a_retry_that_follows_no_refusal(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.TRANSIENT)
    log.append("reserve_seats", RETRYING, attempt=1)


def rows_out_of_order(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.SUCCESS)
    log.append("charge_account", STARTED, attempt=1)
    log.entries[-1] = dataclasses.replace(log.entries[-1], seq=2)


def a_row_of_another_saga(log: SagaLog) -> None:
    log.call("reserve_seats", Outcome.SUCCESS)
    log.entries[-1] = dataclasses.replace(log.entries[-1], saga_id=uuid.uuid4())


MISMATCHES = [
    (unknown_step, "has no such step"),
    (compensation_of_a_step_without_one, "has no compensation"),
    (compensation_after_the_pivot_succeeded, "pivot had succeeded"),
    (
        action_before_the_previous_step_succeeded,
        r"earlier steps have not succeeded: \['reserve_seats'\]",
    ),
    (action_after_compensation_began, "after compensation began"),
    (compensation_of_a_step_that_never_started, "action never started"),
    (compensations_out_of_reverse_order, r"not compensated yet: \['charge_account'\]"),
    (result_without_a_start, "cannot follow nothing"),
    (rows_after_success, "cannot follow SUCCEEDED"),
    (a_start_that_skips_an_attempt, "attempt 2, expected 1"),
    (a_result_for_another_attempt, "attempt 2, expected 1"),
    (a_retry_that_follows_no_refusal, "cannot follow RETRYING"),
    (rows_out_of_order, "out of order"),
    (a_row_of_another_saga, "belongs to saga"),
]
# Row by row, the caller vouches for the saga and the order of its rows.
ROW_MISMATCHES = [m for m in MISMATCHES if m[0] not in (rows_out_of_order, a_row_of_another_saga)]


def _name(value: object) -> str:
    return getattr(value, "__name__", "")


@pytest.mark.parametrize(("write", "complaint"), MISMATCHES, ids=_name)
def test_a_log_that_disagrees_with_the_definition_is_an_error_not_a_guess(
    write: Callable[[SagaLog], None], complaint: str
) -> None:
    log = SagaLog()
    write(log)

    with pytest.raises(LogMismatch, match=complaint):
        read_log(BOOKING_SAGA, log.entries)


def test_advance_reads_rows_one_at_a_time_as_read_log_reads_them_all() -> None:
    log = SagaLog()
    log.call("reserve_seats", Outcome.SUCCESS)
    log.call("charge_account", Outcome.CRASH)
    log.call("charge_account", Outcome.TRANSIENT, attempt=2)
    log.call("charge_account", Outcome.REFUSED, attempt=3)
    log.call("charge_account", Outcome.SUCCESS, phase=COMPENSATION)
    log.call("reserve_seats", Outcome.SUCCESS, phase=COMPENSATION)

    progress = read_log(BOOKING_SAGA, [])
    for count, entry in enumerate(log.entries, start=1):
        progress = advance(progress, BOOKING_SAGA, entry)
        assert progress == read_log(BOOKING_SAGA, log.entries[:count])


@pytest.mark.parametrize(("write", "complaint"), ROW_MISMATCHES, ids=_name)
def test_advance_refuses_the_rows_read_log_refuses(
    write: Callable[[SagaLog], None], complaint: str
) -> None:
    log = SagaLog()
    write(log)
    *before, last = log.entries
    progress = read_log(BOOKING_SAGA, before)

    with pytest.raises(LogMismatch, match=complaint):
        advance(progress, BOOKING_SAGA, last)
