"""The reservation transition table, checked for every pair of states."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from event_svc.domain.model import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    Reservation,
    ReservationStatus,
    SeatChange,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
S = ReservationStatus

EXPECTED = {
    (S.HELD, S.CONFIRMED): SeatChange(held=-3, sold=3),
    (S.HELD, S.RELEASED): SeatChange(held=-3, sold=0),
    (S.HELD, S.EXPIRED): SeatChange(held=-3, sold=0),
    (S.CONFIRMED, S.RELEASED): SeatChange(held=0, sold=-3),
}


def reservation(status: ReservationStatus, *, expires_at: datetime = NOW) -> Reservation:
    return Reservation(
        reservation_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        quantity=3,
        amount_cents=300,
        status=status,
        expires_at=expires_at,
    )


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_every_transition_is_allowed_only_with_its_seat_change(
    source: ReservationStatus, target: ReservationStatus
) -> None:
    start = reservation(source)
    if (source, target) in EXPECTED:
        moved, change = start.move_to(target)
        assert moved.status is target
        assert moved.quantity == start.quantity
        assert change == EXPECTED[(source, target)]
    else:
        with pytest.raises(IllegalTransition, match=f"from {source.value} to {target.value}"):
            start.move_to(target)


def test_the_table_lists_exactly_the_expected_moves() -> None:
    assert set(TRANSITIONS) == set(EXPECTED)


def test_a_tombstone_is_released_and_cannot_move() -> None:
    tomb = Reservation.tombstone(uuid.uuid4())
    assert tomb.is_tombstone
    assert tomb.status is S.RELEASED
    assert (tomb.quantity, tomb.amount_cents, tomb.expires_at) == (0, 0, None)
    for target in S:
        with pytest.raises(IllegalTransition):
            tomb.move_to(target)


def test_a_hold_lapses_at_its_expiry_and_other_states_never_do() -> None:
    held = reservation(S.HELD, expires_at=NOW)
    assert not held.lapsed(NOW - timedelta(microseconds=1))
    assert held.lapsed(NOW)
    for status in (S.CONFIRMED, S.RELEASED, S.EXPIRED):
        assert not reservation(status, expires_at=NOW).lapsed(NOW + timedelta(days=1))


def test_same_request_compares_event_and_quantity() -> None:
    held = reservation(S.HELD)
    assert held.event_id is not None
    assert held.same_request(held.event_id, 3)
    assert not held.same_request(held.event_id, 4)
    assert not held.same_request(uuid.uuid4(), 3)


def test_available_seats_is_what_is_neither_held_nor_sold() -> None:
    event = Event(
        event_id=uuid.uuid4(),
        name="n",
        venue="v",
        starts_at=NOW,
        capacity=10,
        price_cents=5,
        held_seats=3,
        sold_seats=4,
        created_at=NOW,
    )
    assert event.available_seats == 3
