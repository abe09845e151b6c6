"""PostgreSQL stopped abruptly (immediate mode) and started again while bookings are in flight.

The embedded system keeps every service's database in one cluster, so the
booking database goes away together with the account and event databases.
Every saga is held inside a slowed Charge when the database stops, and the
outage outlasts the delay, so each Charge meets a database that is down
(account_svc answers UNAVAILABLE), and so does booking_svc's write of the
answer: the saga pauses, its lease lapses (2 s here), and recovery claims it
once the database is back and repeats the Charge with the same key.
Afterwards every booking is final and the invariants hold.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

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

BOOKINGS = 30
ACCOUNTS = 5
EVENTS = 2
CAPACITY = 20
PRICE = 900
# Below booking_svc's 5 s call deadline, so the delayed Charges are not retried for slowness.
CHARGE_DELAY_SECONDS = 2.0
# How long the database stays down: past the end of every delayed Charge.
OUTAGE_SECONDS = 3.0


@pytest.fixture(scope="module")
def live_env() -> dict[str, dict[str, str]]:
    return {
        "account_svc": {"ACCOUNT_SVC_FAULT_CONTROL": "true"},
        "booking_svc": {
            "BOOKING_SVC_LEASE_SECONDS": "2",
            "BOOKING_SVC_MAX_BACKOFF_SECONDS": "0.5",
        },
    }


def test_a_database_restart_mid_run_leaves_every_booking_final_and_the_books_balanced(
    live: LocalSystem, client: Client
) -> None:
    accounts = [client.account(balance_cents=6 * PRICE) for _ in range(ACCOUNTS)]
    events = [client.event(capacity=CAPACITY, price_cents=PRICE) for _ in range(EVENTS)]
    set_faults(live, "account_svc", delay("Charge", CHARGE_DELAY_SECONDS, count=BOOKINGS))

    # Each account books 6 seats and can pay for 6: only the outage can make one fail.
    orders = [(accounts[n % ACCOUNTS], events[n % EVENTS]) for n in range(BOOKINGS)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        placed = list(pool.map(lambda order: client.book(*order), orders))
    assert {p.status for p in placed} == {booking_pb2.BOOKING_STATUS_PENDING}
    # Every saga has its Charge in flight, held by the delay: the database goes now.
    wait_for(
        lambda: fired(live, "account_svc") == [BOOKINGS],
        timeout=20,
        what=f"{BOOKINGS} Charges reaching account_svc",
    )
    live.stop_postgres(mode="immediate")
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        live.start_postgres()

    done = {p.booking_id: client.wait_done(p.booking_id, timeout=60) for p in placed}

    outcomes = Counter(status_name(d.status) for d in done.values())
    assert set(outcomes) <= {"CONFIRMED", "FAILED"}, outcomes
    for d in done.values():
        if d.status == booking_pb2.BOOKING_STATUS_FAILED:
            # Only a Charge budget spent on the outage may fail a booking that could pay.
            assert "charge_account spent its" in d.failure_reason, d.failure_reason
    repeated = sum(
        action_rows(client, b, "charge_account", booking_pb2.STEP_EVENT_STARTED) > 1 for b in done
    )
    assert repeated > 0, "no Charge was repeated after the outage; the test proved nothing"
    confirmed = [d for d in done.values() if d.status == booking_pb2.BOOKING_STATUS_CONFIRMED]
    for account in accounts:
        paid = sum(d.amount_cents for d in confirmed if d.account_id == account)
        assert client.net_charged(account) == paid
        assert client.balance(account) == client.ledger_total(account)
    for event in events:
        seats = client.seats(event)
        sold = sum(d.quantity for d in confirmed if d.event_id == event)
        assert (seats.sold_seats, seats.held_seats) == (sold, 0)
    print(f"after the database restart: {dict(outcomes)}; {repeated} Charges repeated")
    clear_faults(live, "account_svc")
    assert_invariants_hold(live, *accounts)


def test_a_booking_asked_for_while_the_database_is_down_is_refused_as_unavailable_at_once(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10 * PRICE)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    # booking_svc now knows the account's token, so only its own database is missing below.
    client.booking(client.book(account, event).booking_id)
    live.stop_postgres()
    try:
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            client.book(account, event, key="while-down")
        waited = time.monotonic() - began
    finally:
        live.start_postgres()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "database is unavailable" in (refused.value.details() or "")
    # Refused within the journal's wait for a connection, not at the caller's deadline.
    assert waited < 10
    retried = wait_for(
        lambda: client.book(account, event, key="while-down"),
        timeout=30,
        what="a booking after the restart",
    )
    assert status_name(client.wait_done(retried.booking_id).status) == "CONFIRMED"
    assert_invariants_hold(live, account)
