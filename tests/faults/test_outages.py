"""Each participant down for a while, as a real process killed and started again.

Bookings made while account_svc or event_svc is down meet it before the
pivot, where a step has a budget of BOOKING_SVC_STEP_ATTEMPTS calls:

- down past the budget (5 calls, about a second of backoff): the step gives
  up and the saga compensates, its compensations waiting for the participant;
  once it is back the booking ends FAILED with nothing charged or held;
- back within the budget (100 calls, at least 45 s with backoff capped at
  0.5 s, against a restart of about 2 s): the step succeeds on a later try
  and the booking ends CONFIRMED, charged once.

With notification_svc down the pivot has passed: the booking is CONFIRMED
at once, its notify step retries without a budget, and once notification_svc
is back each booking is notified exactly once.

booking_svc checks a user's token with account_svc and remembers the answer
for 30 s, so each account makes one call before account_svc goes down, as a
user who was just using the app would have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import pytest

from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import LocalSystem
from eventbooking.notification.v1 import notification_pb2
from tests.client import Client, status_name
from tests.faults.support import action_rows, assert_invariants_hold, restarted_with, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

PRICE = 1100
CAPACITY = 6
BOOKINGS = 3
# Caps every pause between tries, so a participant that is back is seen within half a second.
MAX_BACKOFF = "0.5"
# A budget far longer than a restart: 100 calls, at least 95 pauses of 0.5 s.
PATIENT = {"booking_svc": {"BOOKING_SVC_STEP_ATTEMPTS": "100"}}
DEFAULT_ATTEMPTS = 5


@pytest.fixture(scope="module")
def live_env() -> dict[str, dict[str, str]]:
    return {"booking_svc": {"BOOKING_SVC_MAX_BACKOFF_SECONDS": MAX_BACKOFF}}


@dataclass(frozen=True)
class Outage:
    module: str
    # The step before the pivot that calls it first.
    step: str


OUTAGES = [Outage("account_svc", "charge_account"), Outage("event_svc", "reserve_seats")]


@contextmanager
def _down(live: LocalSystem, module: str) -> Iterator[None]:
    """`module` killed (SIGKILL) for the block, and started again when it ends."""
    live.kill(module)
    try:
        yield
    finally:
        live.restart(module)


def _remember_token(client: Client, account: str) -> None:
    """One call with the account's token, so booking_svc knows it while account_svc is away."""
    client.bookings.ListBookings(booking_pb2.ListBookingsRequest(account_id=account), timeout=10)


def _wait_each(booked: list[str], probe: Callable[[str], bool], *, what: str) -> None:
    """Wait until `probe` holds for every booking, one after another."""
    for booking_id in booked:
        wait_for(partial(probe, booking_id), timeout=20, what=f"booking {booking_id} {what}")


def _book_meanwhile(client: Client, account: str, event: str) -> list[str]:
    return [client.book(account, event).booking_id for _ in range(BOOKINGS)]


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: o.module)
def test_a_participant_down_past_the_retry_budget_fails_the_bookings_cleanly(
    live: LocalSystem, client: Client, outage: Outage
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    _remember_token(client, account)

    with _down(live, outage.module):
        booked = _book_meanwhile(client, account, event)

        def compensating(booking_id: str) -> bool:
            # The budget is spent: the saga compensates, and waits for the participant to undo.
            return client.history(booking_id).saga_status == booking_pb2.SAGA_STATUS_COMPENSATING

        _wait_each(booked, compensating, what=f"spending its {outage.step} budget")
        for booking_id in booked:
            assert status_name(client.booking(booking_id).status) == "PENDING"
        if outage.module == "account_svc":
            # The refund waits for account_svc, and the release after it: the seats are held.
            assert client.seats(event).held_seats == BOOKINGS

    for booking_id in booked:
        done = client.wait_done(booking_id, timeout=30)
        assert status_name(done.status) == "FAILED"
        assert f"{outage.step} spent its {DEFAULT_ATTEMPTS} attempts: UNAVAILABLE" in (
            done.failure_reason
        )
        started = action_rows(client, booking_id, outage.step, booking_pb2.STEP_EVENT_STARTED)
        assert started == DEFAULT_ATTEMPTS
    assert client.charges(account) == 0
    assert client.net_charged(account) == 0
    assert client.balance(account) == 10_000
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (CAPACITY, 0, 0)
    assert client.notification_kinds(account) == []
    assert_invariants_hold(live, account)


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda o: o.module)
def test_a_participant_back_within_the_retry_budget_confirms_the_bookings(
    live: LocalSystem, client: Client, outage: Outage
) -> None:
    with restarted_with(live, PATIENT):
        account = client.account(balance_cents=10_000)
        event = client.event(capacity=CAPACITY, price_cents=PRICE)
        _remember_token(client, account)

        with _down(live, outage.module):
            booked = _book_meanwhile(client, account, event)

            def retrying(booking_id: str) -> bool:
                # Two failed tries: the outage was met, and the budget has 98 calls left.
                tries = action_rows(
                    client, booking_id, outage.step, booking_pb2.STEP_EVENT_RETRYING
                )
                return tries >= 2

            _wait_each(booked, retrying, what=f"retrying {outage.step}")

        for booking_id in booked:
            done = client.wait_done(booking_id, timeout=30)
            assert status_name(done.status) == "CONFIRMED", done.failure_reason
            started = action_rows(client, booking_id, outage.step, booking_pb2.STEP_EVENT_STARTED)
            assert 3 <= started < 100
        assert client.charges(account) == BOOKINGS
        assert client.net_charged(account) == BOOKINGS * PRICE
        seats = client.seats(event)
        assert (seats.sold_seats, seats.held_seats) == (BOOKINGS, 0)
        assert client.notification_kinds(account) == ["BOOKING_CONFIRMED"] * BOOKINGS
        assert_invariants_hold(live, account)


def test_notification_svc_down_confirms_the_bookings_and_notifies_each_once_it_is_back(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)

    with _down(live, "notification_svc"):
        booked = _book_meanwhile(client, account, event)

        def notifying(booking_id: str) -> bool:
            # Past the pivot: CONFIRMED at once, with notify retrying for as long as it takes.
            return (
                client.booking(booking_id).status == booking_pb2.BOOKING_STATUS_CONFIRMED
                and action_rows(client, booking_id, "notify", booking_pb2.STEP_EVENT_RETRYING) >= 1
            )

        _wait_each(booked, notifying, what="confirmed and retrying notify")
        for booking_id in booked:
            assert client.history(booking_id).saga_status == booking_pb2.SAGA_STATUS_RUNNING

    for booking_id in booked:
        assert status_name(client.wait_done(booking_id, timeout=30).status) == "CONFIRMED"
    reply = client.notifications.ListNotifications(
        notification_pb2.ListNotificationsRequest(account_id=account), timeout=10
    )
    sent = Counter(
        (n.booking_id, notification_pb2.NotificationKind.Name(n.kind)) for n in reply.notifications
    )
    assert sent == Counter({(b, "NOTIFICATION_KIND_BOOKING_CONFIRMED"): 1 for b in booked}), sent
    assert client.charges(account) == BOOKINGS
    seats = client.seats(event)
    assert (seats.sold_seats, seats.held_seats) == (BOOKINGS, 0)
    assert_invariants_hold(live, account)
