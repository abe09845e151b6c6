"""The services as real processes: reflection, health, and statuses through grpcurl."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import Grpcurl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ACCOUNT = "eventbooking.account.v1.AccountService"
EVENT = "eventbooking.event.v1.EventService"
NOTIFICATION = "eventbooking.notification.v1.NotificationService"


@pytest.mark.parametrize(
    ("module", "service"),
    [
        ("account_svc", ACCOUNT),
        ("event_svc", EVENT),
        ("notification_svc", NOTIFICATION),
    ],
)
def test_list_shows_the_service_health_and_reflection(
    system: dict[str, int], grpcurl: Grpcurl, module: str, service: str
) -> None:
    result = grpcurl.run("-plaintext", f"localhost:{system[module]}", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(
        [service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    )
    described = grpcurl.run("-plaintext", f"localhost:{system[module]}", "describe", service)
    assert f"service {service.rsplit('.', 1)[1]} {{" in described.stdout
    health = grpcurl.call(system[module], "grpc.health.v1.Health/Check", {"service": service})
    assert health == {"status": "SERVING"}


def test_by_hand_booking_moves_seats_and_money(system: dict[str, int], grpcurl: Grpcurl) -> None:
    acc, ev = system["account_svc"], system["event_svc"]
    account = grpcurl.call(
        acc, f"{ACCOUNT}/CreateAccount", {"email": unique_email(), "display_name": "Lin"}
    )
    account_id = account["account"]["account_id"]
    grpcurl.call(acc, f"{ACCOUNT}/Deposit", {"account_id": account_id, "amount_cents": 3000})
    event = grpcurl.call(
        ev,
        f"{EVENT}/CreateEvent",
        {
            "name": "Quartet",
            "venue": "Hall",
            "starts_at": "2027-01-01T20:00:00Z",
            "capacity": 5,
            "price_cents": 1000,
        },
    )
    event_id = event["event"]["event_id"]
    reservation_id = str(uuid.uuid4())
    held = grpcurl.call(
        ev,
        f"{EVENT}/ReserveSeats",
        {
            "reservation_id": reservation_id,
            "event_id": event_id,
            "quantity": 2,
        },
    )
    assert held["reservation"]["status"] == "RESERVATION_STATUS_HELD"
    charged = grpcurl.call(
        acc,
        f"{ACCOUNT}/Charge",
        {
            "account_id": account_id,
            "amount_cents": 2000,
            "idempotency_key": reservation_id,
        },
    )
    assert charged["balance_cents"] == "1000"  # int64 is a string in JSON
    grpcurl.call(ev, f"{EVENT}/ConfirmReservation", {"reservation_id": reservation_id})
    seats = grpcurl.call(ev, f"{EVENT}/GetEvent", {"event_id": event_id})["event"]
    assert (seats["available_seats"], seats.get("held_seats", 0), seats["sold_seats"]) == (3, 0, 2)


@pytest.mark.parametrize(
    ("module", "method", "body", "code", "message"),
    [
        (
            "account_svc",
            f"{ACCOUNT}/GetAccount",
            {"account_id": "x"},
            "InvalidArgument",
            "account_id must be a UUID",
        ),
        (
            "account_svc",
            f"{ACCOUNT}/GetAccount",
            {"account_id": str(uuid.uuid4())},
            "NotFound",
            "does not exist",
        ),
        (
            "account_svc",
            f"{ACCOUNT}/Deposit",
            {"account_id": str(uuid.uuid4()), "amount_cents": -1},
            "InvalidArgument",
            "amount_cents must be between",
        ),
        (
            "account_svc",
            f"{ACCOUNT}/CreateAccount",
            {"email": "a@b.co", "display_name": "x" * 1_000_000},
            "InvalidArgument",
            "display_name is 1000000 characters long",
        ),
        (
            "event_svc",
            f"{EVENT}/GetEvent",
            {"event_id": ""},
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
            "InvalidArgument",
            "quantity",
        ),
        (
            "notification_svc",
            f"{NOTIFICATION}/SendNotification",
            {"idempotency_key": ""},
            "InvalidArgument",
            "idempotency_key",
        ),
    ],
)
def test_bad_input_gets_a_status_and_a_readable_message(
    system: dict[str, int],
    grpcurl: Grpcurl,
    module: str,
    method: str,
    body: dict[str, object],
    code: str,
    message: str,
) -> None:
    error = grpcurl.fail(system[module], method, body)
    assert f"Code: {code}" in error
    assert message in error


def test_a_duplicate_email_is_already_exists(system: dict[str, int], grpcurl: Grpcurl) -> None:
    body = {"email": unique_email(), "display_name": "Dup"}
    grpcurl.call(system["account_svc"], f"{ACCOUNT}/CreateAccount", body)
    error = grpcurl.fail(system["account_svc"], f"{ACCOUNT}/CreateAccount", body)
    assert "Code: AlreadyExists" in error
