"""Each service's Prometheus endpoint, scraped over HTTP after a few bookings.

Counters are compared before and after the bookings, so whatever the
system did before (health checks, earlier tests) does not matter.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventbooking.local import SERVICES
from tests.client import Client, status_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PRICE = 2000
BOOKING_SERVICE = "eventbooking.booking.v1.BookingService"
ACCOUNT_SERVICE = "eventbooking.account.v1.AccountService"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """Every sample one endpoint served."""

    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`; 0 without any."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return Scrape(
        [
            Sample(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    )


def scrape_all(ports: dict[str, int]) -> dict[str, Scrape]:
    return {module: scrape(port) for module, port in ports.items()}


def wait_until(ports: dict[str, int], settled: Callable[[dict[str, Scrape]], bool]) -> None:
    """Scrape until `settled`: a counter may move a moment after the reply that caused it."""
    deadline = time.monotonic() + 10
    while not settled(scrape_all(ports)) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_every_service_serves_prometheus_metrics(
    client: Client, metrics_ports: dict[str, int]
) -> None:
    client.account(balance_cents=0)

    scrapes = scrape_all(metrics_ports)

    assert set(scrapes) == {spec.module for spec in SERVICES}
    for module, scraped in scrapes.items():
        assert scraped.has("eventbooking_rpc_requests_total"), module
        assert scraped.has("eventbooking_rpc_duration_seconds_count"), module


def test_bookings_move_the_request_and_saga_metrics_by_what_they_did(
    client: Client, metrics_ports: dict[str, int]
) -> None:
    rich = client.account(balance_cents=10_000)
    poor = client.account(balance_cents=PRICE)
    event = client.event(capacity=10, price_cents=PRICE)
    before = scrape_all(metrics_ports)

    outcomes = [
        status_name(client.wait_done(client.book(account, event, quantity=2).booking_id).status)
        for account in (rich, rich, poor)
    ]
    assert outcomes == ["CONFIRMED", "CONFIRMED", "FAILED"]

    def moved(scrapes: dict[str, Scrape], module: str, name: str, **labels: str) -> float:
        return scrapes[module].value(name, **labels) - before[module].value(name, **labels)

    def settled(scrapes: dict[str, Scrape]) -> bool:
        finished = moved(scrapes, "booking_svc", "booking_sagas_finished_total", kind="booking")
        return finished >= len(outcomes)

    wait_until(metrics_ports, settled)
    after = scrape_all(metrics_ports)

    def delta(module: str, name: str, **labels: str) -> float:
        return moved(after, module, name, **labels)

    requests = "eventbooking_rpc_requests_total"
    create = {"service": BOOKING_SERVICE, "method": "CreateBooking"}
    assert delta("booking_svc", requests, **create, code="OK") == 3
    assert delta("booking_svc", requests, **create) == 3
    assert delta("booking_svc", "eventbooking_rpc_duration_seconds_count", **create) == 3
    charge = {"service": ACCOUNT_SERVICE, "method": "Charge"}
    assert delta("account_svc", requests, **charge, code="OK") == 2
    assert delta("account_svc", requests, **charge) == 3, "the refused charge is counted too"
    assert delta("account_svc", "eventbooking_rpc_duration_seconds_count", **charge) == 3

    started = delta("booking_svc", "booking_sagas_started_total", kind="booking")
    assert started == 3
    finished = "booking_sagas_finished_total"
    assert delta("booking_svc", finished, kind="booking", status="COMPLETED") == 2
    assert delta("booking_svc", finished, kind="booking", status="COMPENSATED") == 1
    assert delta("booking_svc", finished, kind="booking", status="STUCK") == 0

    step_count = "booking_saga_step_duration_seconds_count"
    calls = {
        ("reserve_seats", "action"): 3,
        ("charge_account", "action"): 3,
        ("confirm_seats", "action"): 2,
        ("notify", "action"): 2,
        # The refused charge applied nothing, so only its hold is given back.
        ("charge_account", "compensation"): 0,
        ("reserve_seats", "compensation"): 1,
    }
    for (step, phase), count in calls.items():
        labels = {"kind": "booking", "step": step, "phase": phase}
        assert delta("booking_svc", step_count, **labels) == count, (step, phase)
        if count:
            duration = after["booking_svc"].value(
                "booking_saga_step_duration_seconds_sum", **labels
            )
            assert duration > 0, (step, phase)
    assert delta("booking_svc", "booking_saga_retries_total") == 0

    oldest = "booking_oldest_running_saga_age_seconds"
    assert after["booking_svc"].has(oldest)
    assert after["booking_svc"].value(oldest) >= 0
