"""A migrated event database for the session, handlers over it, and an in-process server.

The server checks every call as `serve` does, with the access table and the
deployment's secrets from `callers`; account tokens go to a fake lookup.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1._async import HealthServicer
from sqlalchemy.ext.asyncio import AsyncEngine

from event_svc import bootstrap as event_bootstrap
from event_svc.adapters.tables import events, reservations
from event_svc.service_layer.handlers import EventHandlers
from event_svc.settings import Settings
from eventbooking import db
from eventbooking.clock import utcnow
from eventbooking.event.v1 import event_pb2 as pb
from eventbooking.event.v1 import event_pb2_grpc
from eventbooking.localpg import LocalPostgres
from eventbooking.protoconv import timestamp
from eventbooking.server import authenticator, create_server
from tests.conftest import migrated_database
from tests.integration.event.callers import (
    ACCOUNTS,
    ADMIN,
    ADMIN_TOKEN,
    SERVICE_CREDENTIAL,
    fake_lookup,
)

STARTS = datetime(2030, 9, 9, 21, 0, tzinfo=UTC)

# Room for the 50 clients of the concurrency test, each on its own connection.
POOL_SIZE = 60


@pytest.fixture(scope="session")
def event_db(postgres: LocalPostgres) -> str:
    return migrated_database(
        postgres,
        "event",
        migrations=event_bootstrap.MIGRATIONS,
        version_table=event_bootstrap.VERSION_TABLE,
    )


@pytest.fixture(scope="session")
def event_settings(event_db: str) -> Settings:
    return Settings(
        database_url=event_db,
        port=0,
        host="127.0.0.1",
        db_pool_size=POOL_SIZE,
        db_max_overflow=0,
        admin_token=ADMIN_TOKEN,
        service_credential=SERVICE_CREDENTIAL,
    )


@pytest.fixture(scope="session")
async def engine(event_settings: Settings) -> AsyncIterator[AsyncEngine]:
    bound = db.engine_for(event_settings)
    yield bound
    await bound.dispose()


@pytest.fixture(scope="session")
def handlers(event_settings: Settings, engine: AsyncEngine) -> EventHandlers:
    return event_bootstrap.bootstrap(event_settings, engine=engine)


class MovableClock:
    """Real time when the test starts, then only where the test moves it."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def timed_handlers(
    event_settings: Settings, engine: AsyncEngine, clock: MovableClock
) -> EventHandlers:
    """Handlers on the real database whose "now" the test moves."""
    return event_bootstrap.bootstrap(event_settings, engine=engine, clock=clock)


@pytest.fixture(scope="session")
async def channel(
    event_settings: Settings, handlers: EventHandlers
) -> AsyncIterator[grpc.aio.Channel]:
    services = [event_bootstrap.grpc_service(handlers)]
    server, port = create_server(
        event_settings,
        services,
        health=HealthServicer(),
        authenticate=authenticator(event_settings, services, fake_lookup(ACCOUNTS)),
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> event_pb2_grpc.EventServiceStub:
    return event_pb2_grpc.EventServiceStub(channel)


@dataclass(frozen=True)
class Seats:
    """An event row's counters beside what its reservation rows add up to."""

    capacity: int
    held: int
    sold: int
    held_rows: int
    sold_rows: int

    @property
    def available(self) -> int:
        return self.capacity - self.held - self.sold


async def seats(engine: AsyncEngine, event_id: uuid.UUID | str) -> Seats:
    """Read the counters and check them against the reservations, straight from the tables."""
    held_sum = sa.func.coalesce(
        sa.func.sum(reservations.c.quantity).filter(reservations.c.status == "HELD"), 0
    )
    sold_sum = sa.func.coalesce(
        sa.func.sum(reservations.c.quantity).filter(reservations.c.status == "CONFIRMED"), 0
    )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(events.c.capacity, events.c.held_seats, events.c.sold_seats).where(
                    events.c.event_id == uuid.UUID(str(event_id))
                )
            )
        ).one()
        sums = (
            await conn.execute(
                sa.select(held_sum, sold_sum).where(
                    reservations.c.event_id == uuid.UUID(str(event_id))
                )
            )
        ).one()
    result = Seats(
        capacity=row.capacity,
        held=row.held_seats,
        sold=row.sold_seats,
        held_rows=int(sums[0]),
        sold_rows=int(sums[1]),
    )
    assert (result.held, result.sold) == (result.held_rows, result.sold_rows)
    assert result.available >= 0
    return result


async def reservation_row(
    engine: AsyncEngine, reservation_id: uuid.UUID | str
) -> sa.Row[tuple[object, ...]] | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.select(reservations).where(
                    reservations.c.reservation_id == uuid.UUID(str(reservation_id))
                )
            )
        ).first()


def create_request(**overrides: Any) -> pb.CreateEventRequest:
    fields: dict[str, Any] = {
        "name": f"show {uuid.uuid4().hex[:8]}",
        "venue": "Theatre",
        "starts_at": timestamp(STARTS),
        "capacity": 5,
        "price_cents": 2000,
    }
    fields.update(overrides)
    return pb.CreateEventRequest(**fields)


async def create_event(stub: event_pb2_grpc.EventServiceStub, **overrides: Any) -> pb.Event:
    reply: pb.CreateEventResponse = await stub.CreateEvent(
        create_request(**overrides), metadata=ADMIN
    )
    return reply.event


async def events_named(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        count: int = (
            await conn.execute(sa.select(sa.func.count()).where(events.c.name == name))
        ).scalar_one()
    return count
