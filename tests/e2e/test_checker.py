"""`bookingctl check` against the running system: a clean run holds every invariant, and
breakage seeded through the participant RPCs is reported under its invariant with its ids.

The session system is shared, so each run is scoped with --account to the accounts made
here (and the events they booked). The seeded charges are refunded and the hold released
at the end, but the double charge stays a violation: a booking is charged once, refunded or not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from eventbooking.account.v1 import account_pb2
from eventbooking.cli import main
from eventbooking.event.v1 import event_pb2
from eventbooking.local import admin_token_file
from tests.client import Client, bearer, status_name
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PRICE = 500


@pytest.fixture(scope="module")
def client(system: System) -> Iterator[Client]:
    made = Client(system.ports, system.admin_token)
    yield made
    made.close()


@dataclass(frozen=True)
class Scene:
    rich: str
    poor: str
    event: str
    confirmed: str
    failed: str
    cancelled: str


@pytest.fixture(scope="module")
def scene(client: Client) -> Scene:
    """A CONFIRMED, a FAILED (too poor) and a CANCELLED booking on one event of 10 seats."""
    rich = client.account(balance_cents=10_000)
    poor = client.account(balance_cents=100)
    event = client.event(capacity=10, price_cents=PRICE)
    confirmed = client.wait_done(client.book(rich, event, quantity=2).booking_id)
    failed = client.wait_done(client.book(poor, event, quantity=1).booking_id)
    to_cancel = client.wait_done(client.book(rich, event, quantity=1).booking_id)
    client.cancel(to_cancel.booking_id)
    cancelled = client.wait_done(to_cancel.booking_id)
    assert [status_name(b.status) for b in (confirmed, failed, cancelled)] == [
        "CONFIRMED",
        "FAILED",
        "CANCELLED",
    ]
    return Scene(rich, poor, event, confirmed.booking_id, failed.booking_id, cancelled.booking_id)


def bookingctl_check(system: System, scene: Scene, *args: str) -> tuple[int, str]:
    """Run `bookingctl check` on the system, scoped to the scene's accounts."""
    addresses = [
        arg
        for module in system.ports
        for arg in (f"--{module.removesuffix('_svc')}-address", f"127.0.0.1:{system[module]}")
    ]
    result = CliRunner().invoke(
        main,
        [
            "check",
            *addresses,
            "--admin-token-file",
            str(admin_token_file(system.home)),
            "--account",
            scene.rich,
            "--account",
            scene.poor,
            *args,
        ],
    )
    return result.exit_code, result.output


def by_invariant(output: str) -> dict[int, Any]:
    report = json.loads(output)
    return {inv["invariant"]: inv for inv in report["invariants"]}


def test_a_clean_run_holds_every_invariant(system: System, scene: Scene) -> None:
    code, output = bookingctl_check(system, scene)

    assert code == 0, output
    lines = output.splitlines()
    assert lines[-1] == "all 7 invariants hold"
    assert lines[0].startswith("[ok] 1. ")
    code, output = bookingctl_check(system, scene, "--json")
    assert code == 0, output
    found = by_invariant(output)
    assert found[1]["examined"] == {"events": 1, "bookings": 3}
    assert found[2]["examined"]["confirmed bookings"] == 1
    assert found[3]["examined"]["failed or cancelled bookings"] == 2
    assert found[4]["examined"]["accounts"] == 2
    assert found[6]["examined"]["confirmed bookings"] == 1


def test_seeded_breakage_is_reported_with_its_ids(
    system: System, client: Client, scene: Scene
) -> None:
    service = bearer(system.service_credential())
    # A charged FAILED booking: money taken for a booking that failed.
    failed_key = f"seeded-{uuid.uuid4()}"
    charged_failed = client.accounts.Charge(
        account_pb2.ChargeRequest(
            account_id=scene.poor,
            amount_cents=50,
            idempotency_key=failed_key,
            reference=scene.failed,
        ),
        metadata=service,
        timeout=10,
    ).transaction
    # A double charge: a second charge, under a new key, for the CONFIRMED booking.
    double_key = f"seeded-{uuid.uuid4()}"
    doubled = client.accounts.Charge(
        account_pb2.ChargeRequest(
            account_id=scene.rich,
            amount_cents=2 * PRICE,
            idempotency_key=double_key,
            reference=scene.confirmed,
        ),
        metadata=service,
        timeout=10,
    ).transaction
    # Seats held with no booking behind them.
    reservation = str(uuid.uuid4())
    client.events.ReserveSeats(
        event_pb2.ReserveSeatsRequest(
            reservation_id=reservation, event_id=scene.event, quantity=2, hold_seconds=600
        ),
        metadata=service,
        timeout=10,
    )
    try:
        code, output = bookingctl_check(system, scene, "--json")

        assert code == 1, output
        report = json.loads(output)
        assert report["holds"] is False
        found = by_invariant(output)
        assert [v["ids"] for v in found[1]["violations"]] == [[scene.event]]
        assert "2 seats held" in found[1]["violations"][0]["message"]
        assert found[2]["violations"][0]["ids"][0] == scene.confirmed
        assert doubled.transaction_id in found[2]["violations"][0]["ids"]
        assert "charged 2 times" in found[2]["violations"][0]["message"]
        assert found[3]["violations"][0]["ids"] == [scene.failed, charged_failed.transaction_id]
        assert "net charge of 50 cents" in found[3]["violations"][0]["message"]
        # The ledger itself stays consistent; the rest holds.
        assert {n for n, inv in found.items() if not inv["holds"]} == {1, 2, 3}

        code, text = bookingctl_check(system, scene)
        assert code == 1
        assert text.splitlines()[-1].startswith("3 violation(s) of invariant(s) 1, 2, 3;")
        assert f"[ids: {scene.event}]" in text
    finally:
        for key in (failed_key, double_key):
            client.accounts.Refund(
                account_pb2.RefundRequest(idempotency_key=key, reason="seeded"),
                metadata=service,
                timeout=10,
            )
        client.events.ReleaseReservation(
            event_pb2.ReleaseReservationRequest(reservation_id=reservation),
            metadata=service,
            timeout=10,
        )
