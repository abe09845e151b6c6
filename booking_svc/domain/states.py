"""Booking and saga states, each a closed enum with one table of the moves it allows.

Every status change in the service goes through `transition`, so a move that
is not in a table is refused in one place, with both states named.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from eventbooking.errors import FailedPrecondition


class BookingStatus(enum.Enum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class SagaStatus(enum.Enum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    # Parked after a failure no retry can fix; an operator retries or compensates it.
    STUCK = "STUCK"


class StepPhase(enum.Enum):
    ACTION = "ACTION"
    COMPENSATION = "COMPENSATION"


class StepEvent(enum.Enum):
    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"


B = BookingStatus
S = SagaStatus

# Every legal move of a booking; a status with no targets is final.
BOOKING_TRANSITIONS: Mapping[BookingStatus, frozenset[BookingStatus]] = {
    B.PENDING: frozenset({B.CONFIRMED, B.FAILED, B.CANCELLING}),
    B.CONFIRMED: frozenset({B.CANCELLING}),
    # Never back to CONFIRMED: a saga that passes its pivot after the cancel goes on as the cancel saga.
    B.CANCELLING: frozenset({B.CANCELLED}),
    B.FAILED: frozenset(),
    B.CANCELLED: frozenset(),
}

# Every legal move of a saga; a status with no targets is final.
SAGA_TRANSITIONS: Mapping[SagaStatus, frozenset[SagaStatus]] = {
    S.RUNNING: frozenset({S.COMPLETED, S.COMPENSATING, S.STUCK}),
    S.COMPENSATING: frozenset({S.COMPENSATED, S.STUCK}),
    # An operator's retry or compensate; whether compensating is allowed is the planner's rule.
    S.STUCK: frozenset({S.RUNNING, S.COMPENSATING}),
    S.COMPLETED: frozenset(),
    S.COMPENSATED: frozenset(),
}

# Where a booking rests with no saga moving it: what a client waits for.
SETTLED: frozenset[BookingStatus] = frozenset({B.CONFIRMED, B.FAILED, B.CANCELLED})

Status = TypeVar("Status", BookingStatus, SagaStatus)


class IllegalTransition(FailedPrecondition):
    """A status change that its transition table does not allow."""


def _targets(
    status: BookingStatus | SagaStatus,
) -> frozenset[BookingStatus] | frozenset[SagaStatus]:
    if isinstance(status, BookingStatus):
        return BOOKING_TRANSITIONS[status]
    return SAGA_TRANSITIONS[status]


def transition(current: Status, target: Status) -> Status:
    """`target`, if the table allows moving there from `current`; else IllegalTransition."""
    if target not in _targets(current):
        kind = "booking" if isinstance(current, BookingStatus) else "saga"
        raise IllegalTransition(f"a {kind} cannot go from {current.value} to {target.value}")
    return target


def is_final(status: BookingStatus | SagaStatus) -> bool:
    """True for a status that nothing may follow."""
    return not _targets(status)
