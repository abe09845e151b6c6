"""A seat hold that lapses while the charge is slow: confirm is refused after the charge.

booking_svc asks event_svc for a hold of BOOKING_SVC_HOLD_SECONDS (1 s here)
with every ReserveSeats; event_svc's own EVENT_SVC_DEFAULT_HOLD_SECONDS only
applies to a request that names no hold. account_svc holds the Charge for
2.5 s: past the hold, within booking_svc's 5 s call deadline, so the charge
succeeds on its first try. The pivot then finds the hold expired
(FAILED_PRECONDITION), so the saga refunds and releases: the booking ends
FAILED, charged and refunded once (zero net), with every seat back.
"""

from __future__ import annotations

import pytest

from eventbooking.account.v1 import account_pb2
from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import LocalSystem
from tests.client import Client, status_name
from tests.faults.support import assert_invariants_hold, clear_faults, delay, fired, set_faults

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

PRICE = 1400
QUANTITY = 2
CAPACITY = 4
HOLD_SECONDS = 1
# Longer than the hold, shorter than BOOKING_SVC_STEP_DEADLINE_SECONDS (5).
CHARGE_DELAY_SECONDS = 2.5


@pytest.fixture(scope="module")
def live_env() -> dict[str, dict[str, str]]:
    return {
        "account_svc": {"ACCOUNT_SVC_FAULT_CONTROL": "true"},
        "booking_svc": {"BOOKING_SVC_HOLD_SECONDS": str(HOLD_SECONDS)},
    }


def _track(client: Client, booking_id: str) -> list[tuple[str, str, str, str]]:
    """The booking's saga log as (step, phase, event, code) rows, in order."""
    return [
        (
            e.step,
            booking_pb2.StepPhase.Name(e.phase).removeprefix("STEP_PHASE_"),
            booking_pb2.StepEvent.Name(e.event).removeprefix("STEP_EVENT_"),
            e.code,
        )
        for e in client.history(booking_id).entries
    ]


def test_a_hold_that_lapses_during_a_slow_charge_ends_failed_and_refunded(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    set_faults(live, "account_svc", delay("Charge", CHARGE_DELAY_SECONDS, count=1))
    try:
        booking = client.book(account, event, quantity=QUANTITY)
        done = client.wait_done(booking.booking_id, timeout=30)
        assert fired(live, "account_svc") == [1]
    finally:
        clear_faults(live, "account_svc")

    assert status_name(done.status) == "FAILED"
    assert "confirm_seats failed: FAILED_PRECONDITION: hold expired" in done.failure_reason
    rows = _track(client, booking.booking_id)
    # Charged on the first try (the delay stayed within the deadline), then refused at the pivot.
    assert [r for r in rows if r[:2] == ("charge_account", "ACTION")] == [
        ("charge_account", "ACTION", "STARTED", ""),
        ("charge_account", "ACTION", "SUCCEEDED", "OK"),
    ]
    assert ("confirm_seats", "ACTION", "FAILED", "FAILED_PRECONDITION") in rows
    assert ("charge_account", "COMPENSATION", "SUCCEEDED", "OK") in rows
    assert ("reserve_seats", "COMPENSATION", "SUCCEEDED", "OK") in rows
    kinds = sorted(account_pb2.TransactionKind.Name(t.kind) for t in client.transactions(account))
    assert kinds == [
        "TRANSACTION_KIND_CHARGE",
        "TRANSACTION_KIND_DEPOSIT",
        "TRANSACTION_KIND_REFUND",
    ]
    assert client.net_charged(account) == 0
    assert client.balance(account) == 10_000
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (CAPACITY, 0, 0)
    assert client.notification_kinds(account) == []
    assert_invariants_hold(live, account)
