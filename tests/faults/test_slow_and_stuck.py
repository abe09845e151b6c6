"""Sagas that outlive their seat hold or their neighbours, and how they end or get repaired.

- A hold that lapses while booking_svc is down after the charge: confirm is
  refused, so the charge is refunded and the seats go back.
- notification_svc down past the give-up limit: the booking is CONFIRMED,
  its saga STUCK at notify; `bookingctl saga retry` finishes it.
- event_svc down through the pivot: the saga is STUCK before it passed the
  pivot; `bookingctl saga compensate` undoes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventbooking.booking.v1 import booking_pb2
from eventbooking.local import LocalSystem
from tests.client import Client, status_name

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

PRICE = 1200
BOOKINGCTL = Path(sys.executable).parent / "bookingctl"
IMPATIENT = {"BOOKING_SVC_GIVE_UP_AFTER_SECONDS": "2", "BOOKING_SVC_STEP_DEADLINE_SECONDS": "1"}


def _crash_after(live: LocalSystem, point: str, **env: str) -> None:
    live.kill("booking_svc")
    live.restart("booking_svc", env={"BOOKING_SVC_CRASH_POINTS": point, **env})


def _died(live: LocalSystem) -> None:
    assert live.service("booking_svc").process.wait(timeout=30) != 0


def _saga(client: Client, booking_id: str, *, status: int, timeout: float = 30) -> str:
    """The booking's latest saga id, once the saga is in `status`."""
    deadline = time.monotonic() + timeout
    while True:
        history = client.history(booking_id)
        if history.saga_status == status:
            return history.saga_id
        assert time.monotonic() < deadline, f"saga never reached {status}: {history.saga_status}"
        time.sleep(0.1)


def _bookingctl(live: LocalSystem, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            str(BOOKINGCTL),
            "saga",
            *args,
            "--address",
            f"localhost:{live.ports['booking_svc']}",
            "--admin-token-file",
            str(live.admin_token_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    saga: dict[str, Any] = json.loads(result.stdout)["saga"]
    return saga


def test_a_hold_that_lapses_before_confirm_ends_failed_and_refunded(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=4, price_cents=PRICE)
    _crash_after(live, "booking.charge_account.action.after_log", BOOKING_SVC_HOLD_SECONDS="1")
    booking = client.book(account, event, quantity=2)
    _died(live)
    assert client.net_charged(account) == 2 * PRICE
    time.sleep(1.5)

    live.restart("booking_svc")
    done = client.wait_done(booking.booking_id)

    assert status_name(done.status) == "FAILED"
    assert "hold expired" in done.failure_reason
    assert client.charges(account) == 1
    assert client.net_charged(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (4, 0, 0)


def test_a_saga_stuck_at_notify_is_finished_by_an_operator_retry(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=4, price_cents=PRICE)
    live.kill("booking_svc")
    live.restart("booking_svc", env=IMPATIENT)
    live.kill("notification_svc")
    try:
        booking = client.book(account, event)
        saga_id = _saga(client, booking.booking_id, status=booking_pb2.SAGA_STATUS_STUCK)
        assert status_name(client.booking(booking.booking_id).status) == "CONFIRMED"
        stuck = client.saga(saga_id).saga
        assert stuck.current_step == "notify"
        assert "UNAVAILABLE" in stuck.note
    finally:
        live.restart("notification_svc")

    retried = _bookingctl(live, "retry", saga_id)

    assert retried["status"] in ("RUNNING", "COMPLETED")
    _saga(client, booking.booking_id, status=booking_pb2.SAGA_STATUS_COMPLETED)
    assert client.notification_kinds(account) == ["BOOKING_CONFIRMED"]
    assert client.charges(account) == 1


def test_a_saga_stuck_at_its_pivot_is_undone_by_an_operator_compensate(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=4, price_cents=PRICE)
    _crash_after(live, "booking.confirm_seats.action.before_call")
    booking = client.book(account, event, quantity=2)
    _died(live)
    live.kill("event_svc")
    try:
        live.restart("booking_svc", env=IMPATIENT)
        saga_id = _saga(client, booking.booking_id, status=booking_pb2.SAGA_STATUS_STUCK)
        assert client.saga(saga_id).saga.current_step == "confirm_seats"
    finally:
        live.restart("event_svc")
    live.kill("booking_svc")
    live.restart("booking_svc")

    compensated = _bookingctl(live, "compensate", saga_id)

    assert compensated["status"] in ("COMPENSATING", "COMPENSATED")
    done = client.wait_done(booking.booking_id)
    assert status_name(done.status) == "FAILED"
    assert "operator" in done.failure_reason
    assert client.net_charged(account) == 0
    seats = client.seats(event)
    assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (4, 0, 0)
