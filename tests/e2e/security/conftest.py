"""A system of real processes for the security tests, with the admin token at hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventbooking.local import SERVICES, LocalSystem, local_system
from eventbooking.localpg import free_port


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """The embedded system on free ports, as `bookingctl up` runs it: security on."""
    ports = {spec.module: free_port() for spec in SERVICES}
    system = LocalSystem(
        tmp_path_factory.mktemp("home"), ports, pg_port=free_port(), echo=lambda _m: None
    )
    with local_system(system):
        yield system
