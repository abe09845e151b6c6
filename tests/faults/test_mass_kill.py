"""booking_svc killed with SIGKILL while 100 bookings are in flight, then started again.

The bookings are submitted without waiting for their outcome. Every Charge
is held for a while by a delay at account_svc, so once account_svc has seen
all 100 of them every saga is inside its Charge call, with its STARTED row
committed and no reply yet: booking_svc is killed there. The process that
replaces it (same instance id) takes its sagas back at once and repeats
each Charge with the same key. Each account can pay for 8 of its 10
bookings, so exactly 80 end CONFIRMED and 20 FAILED; nobody is charged twice.
"""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from eventbooking.account.v1 import account_pb2
from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import LocalSystem
from tests.client import Client, status_name
from tests.faults.support import (
    action_rows,
    assert_invariants_hold,
    clear_faults,
    delay,
    fired,
    set_faults,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

BOOKINGS = 100
ACCOUNTS = 10
PER_ACCOUNT = BOOKINGS // ACCOUNTS
# Bookings each account can pay for; the rest are refused for insufficient funds.
AFFORDABLE = 8
EVENTS = 2
CAPACITY = 60
PRICE = 1000
# Long enough that no Charge ends before the kill, and below booking_svc's 5 s call deadline.
CHARGE_DELAY_SECONDS = 4.0


@pytest.fixture(scope="module")
def live_env() -> dict[str, dict[str, str]]:
    return {"account_svc": {"ACCOUNT_SVC_FAULT_CONTROL": "true"}}


def test_booking_svc_killed_with_100_bookings_in_flight_finishes_them_all_charged_once(
    live: LocalSystem, client: Client
) -> None:
    accounts = [client.account(balance_cents=AFFORDABLE * PRICE) for _ in range(ACCOUNTS)]
    events = [client.event(capacity=CAPACITY, price_cents=PRICE) for _ in range(EVENTS)]
    set_faults(live, "account_svc", delay("Charge", CHARGE_DELAY_SECONDS, count=BOOKINGS))

    orders = [(accounts[n % ACCOUNTS], events[n % EVENTS]) for n in range(BOOKINGS)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        placed = list(pool.map(lambda order: client.book(*order), orders))
    assert {p.status for p in placed} == {booking_pb2.BOOKING_STATUS_PENDING}
    wait_for(
        lambda: fired(live, "account_svc") == [BOOKINGS],
        timeout=30,
        what=f"{BOOKINGS} Charges reaching account_svc",
    )
    live.kill("booking_svc", signal.SIGKILL)
    live.restart("booking_svc")

    done = {p.booking_id: client.wait_done(p.booking_id, timeout=60) for p in placed}

    assert len(done) == BOOKINGS
    outcomes = Counter(status_name(d.status) for d in done.values())
    assert outcomes == {
        "CONFIRMED": ACCOUNTS * AFFORDABLE,
        "FAILED": ACCOUNTS * (PER_ACCOUNT - AFFORDABLE),
    }
    for d in done.values():
        if d.status == booking_pb2.BOOKING_STATUS_FAILED:
            assert "insufficient funds" in d.failure_reason, d.failure_reason
        # Killed inside its first Charge, every saga called again with the same key.
        assert (
            action_rows(client, d.booking_id, "charge_account", booking_pb2.STEP_EVENT_STARTED) == 2
        )
    for account in accounts:
        ledger = client.transactions(account)
        keys = Counter(
            t.idempotency_key for t in ledger if t.kind == account_pb2.TRANSACTION_KIND_CHARGE
        )
        assert sorted(keys.values()) == [1] * AFFORDABLE, f"charges by key: {keys}"
        assert client.net_charged(account) == AFFORDABLE * PRICE
        assert client.balance(account) == 0
    for event in events:
        seats = client.seats(event)
        sold = sum(
            d.quantity
            for d in done.values()
            if d.event_id == event and d.status == booking_pb2.BOOKING_STATUS_CONFIRMED
        )
        assert (seats.sold_seats, seats.held_seats, seats.available_seats) == (
            sold,
            0,
            CAPACITY - sold,
        )
    clear_faults(live, "account_svc")
    assert_invariants_hold(live, *accounts)
