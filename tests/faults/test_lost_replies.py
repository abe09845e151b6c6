"""Lost replies on every participant call of the booking saga, and a charge that comes too late.

- Lost reply: the participant does the work and keeps it, but booking_svc sees
  UNAVAILABLE "reply lost (injected)" once. Its retry must be recognised by the
  participant (same idempotency key), so the booking ends exactly as without
  the fault: CONFIRMED and charged once, or FAILED with nothing charged or held.
- Late charge: booking_svc gives up on a slow Charge (deadline 1 s, one attempt)
  and compensates; its Refund kills the key first. grpc cancels the delayed
  handler at the caller's deadline, so the saga's own Charge is then delivered
  again (replayed from the saga log) and account_svc refuses it ABORTED.

Each test restarts the faulted service with `<PREFIX>FAULTS` set, makes its
booking, puts the service back without faults, and ends by running the
invariant checker on the test's own accounts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format

from booking_svc.domain.saga import CHARGE_STEP
from eventbooking.account.v1 import account_pb2
from eventbooking.booking.v1 import booking_pb2
from eventbooking.fault_injection import LOST_REPLY_MESSAGE
from eventbooking.local import LocalSystem
from tests.client import Client, bearer, status_name
from tests.faults.support import assert_invariants_hold, restarted_with

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

PRICE = 1300
QUANTITY = 2
CAPACITY = 5


@dataclass(frozen=True)
class Case:
    module: str
    method: str
    # Whether the booking can pay: True ends CONFIRMED, False ends FAILED (insufficient funds).
    pays: bool
    # More rules for the same service.
    also: tuple[dict[str, object], ...] = ()


# A charge refused on its only try applied nothing and is not refunded; one whose first
# try failed UNAVAILABLE may have applied, so the saga refunds it, and that reply is lost.
UNSURE_FIRST_CHARGE = {
    "service": "*",
    "method": "Charge",
    "kind": "error",
    "code": "UNAVAILABLE",
    "count": 1,
}

CASES = [
    Case("event_svc", "ReserveSeats", pays=True),
    Case("account_svc", "Charge", pays=True),
    Case("event_svc", "ConfirmReservation", pays=True),
    Case("notification_svc", "SendNotification", pays=True),
    Case("event_svc", "ReleaseReservation", pays=False),
    Case("account_svc", "Refund", pays=False, also=(UNSURE_FIRST_CHARGE,)),
]


def _faults(*rules: dict[str, object]) -> str:
    return json.dumps({"seed": 1, "rules": list(rules)})


def _faulted(live: LocalSystem, module: str, rules: str) -> dict[str, str]:
    return {f"{live.service(module).spec.env_prefix}FAULTS": rules}


def _history_messages(client: Client, booking_id: str) -> list[str]:
    return [f"{e.step}: {e.code} {e.message}" for e in client.history(booking_id).entries]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.module}.{c.method}")
def test_a_lost_reply_is_retried_and_the_booking_ends_as_without_it(
    live: LocalSystem, client: Client, case: Case
) -> None:
    balance = 10_000 if case.pays else PRICE
    account = client.account(balance_cents=balance)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    lost_once = _faults(
        {"service": "*", "method": case.method, "kind": "lost_reply", "count": 1}, *case.also
    )

    # The checks run before the participant is restarted: notification_svc keeps its
    # history in memory only, and a restart would forget the notification being checked.
    with restarted_with(live, {case.module: _faulted(live, case.module, lost_once)}):
        booking = client.book(account, event, quantity=QUANTITY)
        done = client.wait_done(booking.booking_id)

        history = _history_messages(client, booking.booking_id)
        assert any(LOST_REPLY_MESSAGE in line for line in history), history
        seats = client.seats(event)
        if case.pays:
            assert status_name(done.status) == "CONFIRMED", done.failure_reason
            assert client.charges(account) == 1
            assert client.net_charged(account) == QUANTITY * PRICE
            assert (seats.sold_seats, seats.held_seats) == (QUANTITY, 0)
            assert client.notification_kinds(account) == ["BOOKING_CONFIRMED"]
        else:
            assert status_name(done.status) == "FAILED"
            assert "insufficient funds" in done.failure_reason
            assert client.net_charged(account) == 0
            assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (
                CAPACITY,
                0,
                0,
            )
            assert client.notification_kinds(account) == []
        assert client.balance(account) == client.ledger_total(account)
        assert_invariants_hold(live, account)


def test_a_charge_that_arrives_after_the_saga_compensated_is_refused(
    live: LocalSystem, client: Client
) -> None:
    account = client.account(balance_cents=10_000)
    event = client.event(capacity=CAPACITY, price_cents=PRICE)
    slow_charge = _faults(
        {"service": "*", "method": "Charge", "kind": "delay", "seconds": 3, "count": 1}
    )
    env = {
        "booking_svc": {
            "BOOKING_SVC_STEP_DEADLINE_SECONDS": "1",
            "BOOKING_SVC_STEP_ATTEMPTS": "1",
        },
        "account_svc": _faulted(live, "account_svc", slow_charge),
    }

    with restarted_with(live, env):
        started = time.monotonic()
        booking = client.book(account, event, quantity=QUANTITY)
        done = client.wait_done(booking.booking_id)

        assert status_name(done.status) == "FAILED"
        history = _history_messages(client, booking.booking_id)
        assert any("DEADLINE_EXCEEDED" in line for line in history), history
        # Wait until the delayed Charge would surely have run (3 s after it arrived).
        time.sleep(max(0.0, started + 6 - time.monotonic()))

        assert client.net_charged(account) == 0
        assert client.balance(account) == 10_000
        seats = client.seats(event)
        assert (seats.available_seats, seats.held_seats, seats.sold_seats) == (CAPACITY, 0, 0)
        assert client.notification_kinds(account) == []

        # grpc cancels the delayed handler at the caller's deadline, so the delayed Charge
        # itself never commits. Deliver it late for real: replay the saga's own request.
        late = _charge_request(client, booking.booking_id)
        with pytest.raises(grpc.RpcError) as refused:
            client.accounts.Charge(late, metadata=bearer(_service_credential(live)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.ABORTED, refused.value.details()
        assert client.net_charged(account) == 0
        assert client.charges(account) == 0
        assert_invariants_hold(live, account)


def _service_credential(live: LocalSystem) -> str:
    return live.service_credential_file.read_text().strip()


def _charge_request(client: Client, booking_id: str) -> account_pb2.ChargeRequest:
    """The Charge request the booking's saga sent, as its log recorded it."""
    saga = client.saga(client.history(booking_id).saga_id)
    for entry in saga.entries:
        if (
            entry.step == CHARGE_STEP
            and entry.phase == booking_pb2.STEP_PHASE_ACTION
            and entry.request_json
        ):
            request = account_pb2.ChargeRequest()
            json_format.Parse(entry.request_json, request, ignore_unknown_fields=True)
            assert request.idempotency_key, entry.request_json
            assert request.amount_cents == QUANTITY * PRICE, entry.request_json
            return request
    raise AssertionError(f"no Charge request in the saga log: {list(saga.entries)}")
