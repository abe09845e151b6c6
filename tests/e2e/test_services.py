"""The services as real processes: reflection, health, a booking and statuses through grpcurl.

Calls carry the token a real caller would: an account's own API token, the
admin token for CreateEvent, the service credential for participant RPCs.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import Grpcurl, System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ACCOUNT = "eventbooking.account.v1.AccountService"
EVENT = "eventbooking.event.v1.EventService"
BOOKING = "eventbooking.booking.v1.BookingService"
SAGA_ADMIN = "eventbooking.booking.v1.SagaAdminService"
NOTIFICATION = "eventbooking.notification.v1.NotificationService"
BOOKING_STEPS = ["reserve_seats", "charge_account", "confirm_seats", "notify"]


def call(
    grpcurl: Grpcurl, port: int, method: str, body: dict[str, object], *, token: str | None
) -> dict[str, Any]:
    """grpcurl's JSON reply, typed loosely enough for a test to index into."""
    return grpcurl.call(port, method, body, token=token)


def new_account(grpcurl: Grpcurl, system: System, name: str) -> tuple[str, str]:
    """A fresh account: its id and the API token CreateAccount returned once."""
    created = call(
        grpcurl,
        system["account_svc"],
        f"{ACCOUNT}/CreateAccount",
        {"email": unique_email(), "display_name": name},
        token=None,
    )
    return created["account"]["account_id"], created["api_token"]


@pytest.mark.parametrize(
    ("module", "services"),
    [
        ("account_svc", [ACCOUNT]),
        ("event_svc", [EVENT]),
        ("booking_svc", [BOOKING, SAGA_ADMIN]),
        ("notification_svc", [NOTIFICATION]),
    ],
)
def test_list_shows_the_service_health_and_reflection(
    system: System, grpcurl: Grpcurl, module: str, services: list[str]
) -> None:
    result = grpcurl.run("-plaintext", f"localhost:{system[module]}", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(
        [*services, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    )
    for service in services:
        described = grpcurl.run("-plaintext", f"localhost:{system[module]}", "describe", service)
        assert f"service {service.rsplit('.', 1)[1]} {{" in described.stdout
        health = grpcurl.call(system[module], "grpc.health.v1.Health/Check", {"service": service})
        assert health == {"status": "SERVING"}


def test_by_hand_booking_moves_seats_and_money(system: System, grpcurl: Grpcurl) -> None:
    acc, ev = system["account_svc"], system["event_svc"]
    service = system.service_credential()
    account_id, token = new_account(grpcurl, system, "Lin")
    call(
        grpcurl,
        acc,
        f"{ACCOUNT}/Deposit",
        {"account_id": account_id, "amount_cents": 3000},
        token=token,
    )
    event = call(
        grpcurl,
        ev,
        f"{EVENT}/CreateEvent",
        {
            "name": "Quartet",
            "venue": "Hall",
            "starts_at": "2027-01-01T20:00:00Z",
            "capacity": 5,
            "price_cents": 1000,
        },
        token=system.admin_token,
    )
    event_id = event["event"]["event_id"]
    reservation_id = str(uuid.uuid4())
    held = call(
        grpcurl,
        ev,
        f"{EVENT}/ReserveSeats",
        {
            "reservation_id": reservation_id,
            "event_id": event_id,
            "quantity": 2,
        },
        token=service,
    )
    assert held["reservation"]["status"] == "RESERVATION_STATUS_HELD"
    charge = {"account_id": account_id, "amount_cents": 2000, "idempotency_key": reservation_id}
    # Participant RPCs are for the services: the account's own token may not charge it.
    refused = grpcurl.fail(acc, f"{ACCOUNT}/Charge", charge, token=token)
    assert "Code: PermissionDenied" in refused
    charged = call(grpcurl, acc, f"{ACCOUNT}/Charge", charge, token=service)
    assert charged["balance_cents"] == "1000"  # int64 is a string in JSON
    call(
        grpcurl,
        ev,
        f"{EVENT}/ConfirmReservation",
        {"reservation_id": reservation_id},
        token=service,
    )
    seats = call(grpcurl, ev, f"{EVENT}/GetEvent", {"event_id": event_id}, token=token)["event"]
    assert (seats["available_seats"], seats.get("held_seats", 0), seats["sold_seats"]) == (3, 0, 2)


def test_a_booking_through_the_booking_service_is_confirmed_charged_once_and_sold(
    system: System, grpcurl: Grpcurl
) -> None:
    acc, ev, book = system["account_svc"], system["event_svc"], system["booking_svc"]
    account_id, token = new_account(grpcurl, system, "Ida")
    call(
        grpcurl,
        acc,
        f"{ACCOUNT}/Deposit",
        {"account_id": account_id, "amount_cents": 5000},
        token=token,
    )
    event = call(
        grpcurl,
        ev,
        f"{EVENT}/CreateEvent",
        {
            "name": "Trio",
            "venue": "Hall",
            "starts_at": "2027-02-01T20:00:00Z",
            "capacity": 4,
            "price_cents": 1200,
        },
        token=system.admin_token,
    )
    event_id = event["event"]["event_id"]
    request = {
        "account_id": account_id,
        "event_id": event_id,
        "quantity": 3,
        "idempotency_key": str(uuid.uuid4()),
        "wait_for_outcome": True,
    }

    booking = call(grpcurl, book, f"{BOOKING}/CreateBooking", request, token=token)["booking"]
    again = call(grpcurl, book, f"{BOOKING}/CreateBooking", request, token=token)["booking"]

    assert booking["status"] == "BOOKING_STATUS_CONFIRMED", booking
    assert booking["amount_cents"] == "3600"  # int64 is a string in JSON
    assert (again["booking_id"], again["status"]) == (booking["booking_id"], booking["status"])
    ledger = call(
        grpcurl, acc, f"{ACCOUNT}/ListTransactions", {"account_id": account_id}, token=token
    )
    charges = [t for t in ledger["transactions"] if t["kind"] == "TRANSACTION_KIND_CHARGE"]
    assert [c["amount_cents"] for c in charges] == ["3600"]
    assert charges[0]["reference"] == booking["booking_id"]
    balance = call(grpcurl, acc, f"{ACCOUNT}/GetAccount", {"account_id": account_id}, token=token)
    assert balance["account"]["balance_cents"] == "1400"
    seats = call(grpcurl, ev, f"{EVENT}/GetEvent", {"event_id": event_id}, token=token)["event"]
    assert (seats["available_seats"], seats.get("held_seats", 0), seats["sold_seats"]) == (1, 0, 3)
    history = call(
        grpcurl,
        book,
        f"{BOOKING}/GetBookingHistory",
        {"booking_id": booking["booking_id"]},
        token=token,
    )
    assert history["saga_status"] == "SAGA_STATUS_COMPLETED"
    entries = history["entries"]
    assert list(dict.fromkeys(e["step"] for e in entries)) == BOOKING_STEPS
    assert {e["saga_id"] for e in entries} == {history["saga_id"]}
    assert {e["phase"] for e in entries} == {"STEP_PHASE_ACTION"}
    for step in BOOKING_STEPS:
        rows = [e for e in entries if e["step"] == step]
        assert rows[0]["event"] == "STEP_EVENT_STARTED", rows
        assert (rows[-1]["event"], rows[-1]["code"]) == ("STEP_EVENT_SUCCEEDED", "OK"), rows


@pytest.mark.parametrize(
    ("module", "method", "body", "caller", "code", "message"),
    [
        (
            "account_svc",
            f"{ACCOUNT}/GetAccount",
            {"account_id": "x"},
            "account",
            "InvalidArgument",
            "account_id must be a UUID",
        ),
        (
            "account_svc",
            f"{ACCOUNT}/GetAccount",
            {"account_id": str(uuid.uuid4())},
            "admin",
            "NotFound",
            "does not exist",
        ),
        (
            "account_svc",
            f"{ACCOUNT}/Deposit",
            {"account_id": str(uuid.uuid4()), "amount_cents": -1},
            "admin",
            "InvalidArgument",
            "amount_cents must be between",
        ),
        (
            "account_svc",
            f"{ACCOUNT}/CreateAccount",
            {"email": "a@b.co", "display_name": "x" * 1_000_000},
            None,
            "InvalidArgument",
            "display_name is 1000000 characters long",
        ),
        (
            "event_svc",
            f"{EVENT}/GetEvent",
            {"event_id": ""},
            "account",
            "InvalidArgument",
            "event_id is required",
        ),
        (
            "event_svc",
            f"{EVENT}/ReserveSeats",
            {
                "reservation_id": str(uuid.uuid4()),
                "event_id": str(uuid.uuid4()),
                "quantity": 1_000_000_000,
            },
            "service",
            "InvalidArgument",
            "quantity",
        ),
        (
            "notification_svc",
            f"{NOTIFICATION}/SendNotification",
            {"idempotency_key": ""},
            "service",
            "InvalidArgument",
            "idempotency_key",
        ),
    ],
)
def test_bad_input_gets_a_status_and_a_readable_message(
    system: System,
    grpcurl: Grpcurl,
    module: str,
    method: str,
    body: dict[str, object],
    caller: str | None,
    code: str,
    message: str,
) -> None:
    tokens = {
        None: None,
        "admin": system.admin_token,
        "service": system.service_credential(),
    }
    token = new_account(grpcurl, system, "Bad")[1] if caller == "account" else tokens[caller]
    error = grpcurl.fail(system[module], method, body, token=token)
    assert f"Code: {code}" in error
    assert message in error


def test_a_duplicate_email_is_already_exists(system: System, grpcurl: Grpcurl) -> None:
    body: dict[str, object] = {"email": unique_email(), "display_name": "Dup"}
    grpcurl.call(system["account_svc"], f"{ACCOUNT}/CreateAccount", body)
    error = grpcurl.fail(system["account_svc"], f"{ACCOUNT}/CreateAccount", body)
    assert "Code: AlreadyExists" in error
