"""The services as real processes exporting traces to a real OTLP receiver, and serving metrics.

Each test module gets its own receiver and its own system, configured the
way an operator would: only through the standard OTEL_* variables and each
service's <PREFIX>METRICS_PORT.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventbooking.local import SERVICES, LocalSystem, local_system
from eventbooking.localpg import free_port
from eventbooking.otlp_sink import Listening, Receiver, serve
from tests.client import Client


@pytest.fixture(scope="module")
def otlp() -> Iterator[Listening]:
    with serve(free_port()) as listening:
        yield listening


@pytest.fixture(scope="module")
def receiver(otlp: Listening) -> Receiver:
    return otlp.receiver


@pytest.fixture(scope="module")
def metrics_ports() -> dict[str, int]:
    """The Prometheus port of each service module."""
    return {spec.module: free_port() for spec in SERVICES}


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, otlp: Listening, metrics_ports: dict[str, int]
) -> Iterator[LocalSystem]:
    """The embedded system, tracing to `otlp`; LocalSystem applies this env on every restart."""
    env: dict[str, dict[str, str]] = {}
    for spec in SERVICES:
        env[spec.module] = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": spec.module,
            # Export within 0.1 s of a span ending, so tests wait little and a crash loses little.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            f"{spec.env_prefix}METRICS_PORT": str(metrics_ports[spec.module]),
        }
    env["booking_svc"]["BOOKING_SVC_RECOVERY_INTERVAL_SECONDS"] = "0.5"
    system = LocalSystem(
        tmp_path_factory.mktemp("home"),
        {spec.module: free_port() for spec in SERVICES},
        pg_port=free_port(),
        echo=lambda _m: None,
        env=env,
    )
    with local_system(system):
        yield system


@pytest.fixture(scope="module")
def client(live: LocalSystem) -> Iterator[Client]:
    made = Client(live.ports, live.admin_token())
    yield made
    made.close()
