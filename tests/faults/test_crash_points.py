"""booking_svc killed at every crash point of every step and compensation, then restarted.

Each test starts booking_svc with one crash point set, starts a booking that
reaches it, sees the process die there (os._exit, as abrupt as SIGKILL),
restarts it without the setting, and checks through the public APIs that
the booking ended fully done or fully undone, and that nothing was charged,
held or notified twice.
"""

from __future__ import annotations

import pytest

from booking_svc.domain.saga import BOOKING_SAGA, CANCEL_SAGA
from booking_svc.domain.states import StepPhase
from booking_svc.service_layer import crash
from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import LocalSystem
from tests.client import Client, status_name
from tests.faults.support import clear_faults, error, set_faults

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

PRICE = 1500
QUANTITY = 2
CAPACITY = 5


@pytest.fixture(scope="module")
def live_env() -> dict[str, dict[str, str]]:
    # Fault control, so that a Charge's first try can fail UNAVAILABLE (see below).
    return {"account_svc": {"ACCOUNT_SVC_FAULT_CONTROL": "true"}}


def _points(definition_kind: str, phase: StepPhase) -> list[str]:
    definition = BOOKING_SAGA if definition_kind == "booking" else CANCEL_SAGA
    return [name for name in crash.every_point([definition]) if f".{phase.value.lower()}." in name]


def _crash_at(live: LocalSystem, point: str) -> None:
    live.kill("booking_svc")
    live.restart("booking_svc", env={"BOOKING_SVC_CRASH_POINTS": point})


def _expect_crash_then_restart(live: LocalSystem) -> None:
    code = live.service("booking_svc").process.wait(timeout=30)
    assert code == crash.EXIT_CODE, f"booking_svc exited {code}, not at its crash point"
    live.restart("booking_svc")


@pytest.mark.parametrize("point", _points("booking", StepPhase.ACTION))
def test_a_crash_in_a_step_still_ends_confirmed_and_charged_once(
    live: LocalSystem, client: Client, point: str
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    _crash_at(live, point)

    booking = client.book(account, event, quantity=QUANTITY)
    _expect_crash_then_restart(live)
    done = client.wait_done(booking.booking_id)

    assert status_name(done.status) == "CONFIRMED"
    assert client.charges(account) == 1
    assert client.net_charged(account) == QUANTITY * PRICE
    seats = client.seats(event)
    assert (seats.sold_seats, seats.held_seats) == (QUANTITY, 0)
    assert client.notification_kinds(account) == ["BOOKING_CONFIRMED"]


@pytest.mark.parametrize("point", _points("booking", StepPhase.COMPENSATION))
def test_a_crash_in_a_compensation_still_ends_failed_with_nothing_charged_or_held(
    live: LocalSystem, client: Client, point: str
) -> None:
    # Too poor to pay, refused after a first try that failed UNAVAILABLE. The refusal says
    # nothing of that try, so the charge is undone as well as the hold: every compensation
    # runs. (A charge refused on its only try is not undone; a refusal applies nothing.)
    account = client.account(balance_cents=PRICE)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    _crash_at(live, point)
    set_faults(live, "account_svc", error("Charge", "UNAVAILABLE", count=1))

    booking = client.book(account, event, quantity=QUANTITY)
    _expect_crash_then_restart(live)
    done = client.wait_done(booking.booking_id)
    clear_faults(live, "account_svc")

    assert status_name(done.status) == "FAILED"
    assert "insufficient funds" in done.failure_reason
    assert client.net_charged(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (CAPACITY, 0, 0)
    assert client.notification_kinds(account) == []


@pytest.mark.parametrize("point", _points("cancel", StepPhase.ACTION))
def test_a_crash_while_cancelling_still_ends_cancelled_and_refunded(
    live: LocalSystem, client: Client, point: str
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    booking = client.book(account, event, quantity=QUANTITY)
    assert status_name(client.wait_done(booking.booking_id).status) == "CONFIRMED"
    _crash_at(live, point)

    cancelling = client.cancel(booking.booking_id)
    assert cancelling.status == booking_pb2.BOOKING_STATUS_CANCELLING
    _expect_crash_then_restart(live)
    done = client.wait_done(booking.booking_id)

    assert status_name(done.status) == "CANCELLED"
    assert client.charges(account) == 1
    assert client.net_charged(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (CAPACITY, 0, 0)
    assert client.notification_kinds(account) == ["BOOKING_CANCELLED", "BOOKING_CONFIRMED"]
