"""Event handlers over the in-memory fakes, with a clock the test moves."""

from __future__ import annotations

from datetime import timedelta

import pytest

from event_svc.service_layer.handlers import EventHandlers
from tests.unit.event.fakes import FakeClock, FakeUnitOfWork, Store

DEFAULT_HOLD = timedelta(seconds=300)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def handlers(store: Store, clock: FakeClock) -> EventHandlers:
    return EventHandlers(lambda: FakeUnitOfWork(store), clock=clock, default_hold=DEFAULT_HOLD)
