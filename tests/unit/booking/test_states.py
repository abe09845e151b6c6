"""The booking and saga transition tables, checked for every pair of states."""

from __future__ import annotations

import itertools

import pytest

from booking_svc.domain.states import (
    BOOKING_TRANSITIONS,
    SAGA_TRANSITIONS,
    BookingStatus,
    IllegalTransition,
    SagaStatus,
    is_final,
    transition,
)
from eventbooking.errors import FailedPrecondition

B = BookingStatus
S = SagaStatus

BOOKING_MOVES = {
    (B.PENDING, B.CONFIRMED),
    (B.PENDING, B.FAILED),
    (B.PENDING, B.CANCELLING),
    (B.CONFIRMED, B.CANCELLING),
    (B.CANCELLING, B.CANCELLED),
}
SAGA_MOVES = {
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.COMPENSATING),
    (S.RUNNING, S.STUCK),
    (S.COMPENSATING, S.COMPENSATED),
    (S.COMPENSATING, S.STUCK),
    (S.STUCK, S.RUNNING),
    (S.STUCK, S.COMPENSATING),
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(B, B)))
def test_a_booking_moves_only_as_the_table_says(
    source: BookingStatus, target: BookingStatus
) -> None:
    if (source, target) in BOOKING_MOVES:
        assert transition(source, target) is target
    else:
        with pytest.raises(IllegalTransition, match=f"from {source.value} to {target.value}"):
            transition(source, target)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_a_saga_moves_only_as_the_table_says(source: SagaStatus, target: SagaStatus) -> None:
    if (source, target) in SAGA_MOVES:
        assert transition(source, target) is target
    else:
        with pytest.raises(IllegalTransition, match=f"from {source.value} to {target.value}"):
            transition(source, target)


def test_the_tables_list_every_status_and_exactly_the_expected_moves() -> None:
    assert set(BOOKING_TRANSITIONS) == set(B)
    assert set(SAGA_TRANSITIONS) == set(S)
    assert {(a, b) for a, targets in BOOKING_TRANSITIONS.items() for b in targets} == BOOKING_MOVES
    assert {(a, b) for a, targets in SAGA_TRANSITIONS.items() for b in targets} == SAGA_MOVES


def test_final_statuses_are_those_nothing_may_follow() -> None:
    assert {status for status in B if is_final(status)} == {B.FAILED, B.CANCELLED}
    assert {status for status in S if is_final(status)} == {S.COMPLETED, S.COMPENSATED}


def test_an_illegal_transition_is_a_failed_precondition_naming_the_kind() -> None:
    with pytest.raises(
        FailedPrecondition, match="a booking cannot go from CANCELLING to CONFIRMED"
    ):
        transition(B.CANCELLING, B.CONFIRMED)
    with pytest.raises(FailedPrecondition, match="a saga cannot go from COMPLETED to RUNNING"):
        transition(S.COMPLETED, S.RUNNING)
