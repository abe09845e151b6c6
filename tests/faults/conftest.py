"""A system of real processes that tests may kill and restart, and a client of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventbooking.local import SERVICES, LocalSystem, local_system
from eventbooking.localpg import free_port
from tests.client import Client


@pytest.fixture(scope="module")
def live_env() -> dict[str, dict[str, str]]:
    """Extra settings per service for the module's system; a test module overrides this."""
    return {}


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, live_env: dict[str, dict[str, str]]
) -> Iterator[LocalSystem]:
    """The embedded system on free ports, for one test module to kill and restart at will."""
    ports = {spec.module: free_port() for spec in SERVICES}
    env = {"booking_svc": {"BOOKING_SVC_RECOVERY_INTERVAL_SECONDS": "0.5"}}
    for module, extra in live_env.items():
        env[module] = {**env.get(module, {}), **extra}
    system = LocalSystem(
        tmp_path_factory.mktemp("home"),
        ports,
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
