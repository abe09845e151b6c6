"""booking_svc's access checks over a real gRPC server and the real booking database.

The participants are the in-memory fakes and account tokens come from a fake
lookup (account_svc is not running here); the bookings, sagas and log rows
are PostgreSQL's, so a refused call is seen to write nothing there.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1._async import HealthServicer
from sqlalchemy.ext.asyncio import AsyncEngine

from booking_svc.adapters.tables import bookings, saga_step_log
from booking_svc.adapters.tables import saga as sagas
from booking_svc.bootstrap import App, bootstrap
from booking_svc.entrypoints.grpc_server import grpc_services
from eventbooking.booking.v1 import booking_pb2 as pb
from eventbooking.booking.v1 import booking_pb2_grpc as pb_grpc
from eventbooking.clock import utcnow
from eventbooking.server import authenticator, create_server
from tests.unit.booking.fakes import (
    ADMIN_TOKEN,
    SERVICE_CREDENTIAL,
    FakeAccountTokens,
    FakeParticipants,
    bearer,
    settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DEADLINE = 10


@dataclass
class Served:
    app: App
    engine: AsyncEngine
    participants: FakeParticipants
    bookings: pb_grpc.BookingServiceStub
    admin: pb_grpc.SagaAdminServiceStub
    alice_id: uuid.UUID
    alice: tuple[tuple[str, str]]
    bob: tuple[tuple[str, str]]
    event_id: uuid.UUID

    async def rows(self, booking_id: str) -> tuple[Any, ...]:
        """What the database holds about a booking: its row, its sagas, its log rows."""
        key = uuid.UUID(booking_id)
        async with self.engine.connect() as conn:
            booking = (
                await conn.execute(sa.select(bookings).where(bookings.c.booking_id == key))
            ).all()
            saga_rows = (
                await conn.execute(sa.select(sagas).where(sagas.c.booking_id == key))
            ).all()
            log_rows = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(saga_step_log)
                    .where(saga_step_log.c.saga_id.in_([s.saga_id for s in saga_rows]))
                )
            ).scalar_one()
        return tuple(booking), tuple(saga_rows), log_rows

    async def bookings_of(self, account_id: uuid.UUID) -> int:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(bookings)
                    .where(bookings.c.account_id == account_id)
                )
            ).scalar_one()


@pytest.fixture
async def served(booking_db: str, engine: AsyncEngine) -> AsyncIterator[Served]:
    service_settings = settings(database_url=booking_db, host="127.0.0.1", port=0)
    participants = FakeParticipants(utcnow)
    app = bootstrap(service_settings, engine=engine, participants=participants)
    tokens = FakeAccountTokens()
    services = grpc_services(app.handlers, max_wait_seconds=DEADLINE)
    server, port = create_server(
        service_settings,
        services,
        health=HealthServicer(),
        authenticate=authenticator(service_settings, services, tokens),
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    alice_id = uuid.uuid4()
    try:
        yield Served(
            app=app,
            engine=engine,
            participants=participants,
            bookings=pb_grpc.BookingServiceStub(channel),
            admin=pb_grpc.SagaAdminServiceStub(channel),
            alice_id=alice_id,
            alice=bearer(tokens.issue(alice_id)),
            bob=bearer(tokens.issue(uuid.uuid4())),
            event_id=uuid.uuid4(),
        )
    finally:
        await channel.close(None)
        await server.stop(None)
        await app.engine.stop()


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def confirmed_booking(s: Served) -> pb.Booking:
    reply = await s.bookings.CreateBooking(
        pb.CreateBookingRequest(
            account_id=str(s.alice_id),
            event_id=str(s.event_id),
            quantity=2,
            idempotency_key=f"key-{uuid.uuid4()}",
            wait_for_outcome=True,
        ),
        metadata=s.alice,
        timeout=DEADLINE,
    )
    assert reply.booking.status == pb.BOOKING_STATUS_CONFIRMED
    await s.app.engine.wait_idle()
    booking: pb.Booking = reply.booking
    return booking


async def test_the_owner_reads_its_booking_through_every_rpc(served: Served) -> None:
    booking = await confirmed_booking(served)
    booking_id = booking.booking_id

    got = await served.bookings.GetBooking(
        pb.GetBookingRequest(booking_id=booking_id), metadata=served.alice, timeout=DEADLINE
    )
    listed = await served.bookings.ListBookings(
        pb.ListBookingsRequest(account_id=str(served.alice_id)),
        metadata=served.alice,
        timeout=DEADLINE,
    )
    history = await served.bookings.GetBookingHistory(
        pb.GetBookingHistoryRequest(booking_id=booking_id), metadata=served.alice, timeout=DEADLINE
    )
    watched = [
        reply.booking
        async for reply in served.bookings.WatchBooking(
            pb.WatchBookingRequest(booking_id=booking_id), metadata=served.alice, timeout=DEADLINE
        )
    ]
    cancelled = await served.bookings.CancelBooking(
        pb.CancelBookingRequest(booking_id=booking_id, wait_for_outcome=True),
        metadata=served.alice,
        timeout=DEADLINE,
    )

    assert got.booking == booking
    assert [b.booking_id for b in listed.bookings] == [booking_id]
    assert history.saga_status == pb.SAGA_STATUS_COMPLETED
    assert watched == [booking]
    assert cancelled.booking.status == pb.BOOKING_STATUS_CANCELLED


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("nobody", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        ("bob", grpc.StatusCode.PERMISSION_DENIED),
        ("service", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_others_are_refused_every_rpc_and_the_database_is_unchanged(
    served: Served, who: str, code: grpc.StatusCode
) -> None:
    booking = await confirmed_booking(served)
    metadata = {
        "nobody": (),
        "wrong": bearer("not-a-token-anyone-was-given"),
        "bob": served.bob,
        "service": bearer(SERVICE_CREDENTIAL),
    }[who]
    before = await served.rows(booking.booking_id)
    calls_before = list(served.participants.calls)
    by_id = {"booking_id": booking.booking_id}

    errors = [
        await refusal(
            served.bookings.CreateBooking(
                pb.CreateBookingRequest(
                    account_id=str(served.alice_id),
                    event_id=str(served.event_id),
                    quantity=1,
                    idempotency_key="not-alices",
                ),
                metadata=metadata,
                timeout=DEADLINE,
            )
        ),
        await refusal(
            served.bookings.GetBooking(
                pb.GetBookingRequest(**by_id), metadata=metadata, timeout=DEADLINE
            )
        ),
        await refusal(
            served.bookings.ListBookings(
                pb.ListBookingsRequest(account_id=str(served.alice_id)),
                metadata=metadata,
                timeout=DEADLINE,
            )
        ),
        await refusal(
            served.bookings.CancelBooking(
                pb.CancelBookingRequest(**by_id), metadata=metadata, timeout=DEADLINE
            )
        ),
        await refusal(
            served.bookings.GetBookingHistory(
                pb.GetBookingHistoryRequest(**by_id), metadata=metadata, timeout=DEADLINE
            )
        ),
        await refusal(
            served.bookings.WatchBooking(
                pb.WatchBookingRequest(**by_id), metadata=metadata, timeout=DEADLINE
            ).read()
        ),
    ]
    await served.app.engine.wait_idle()

    assert [e.code() for e in errors] == [code] * 6, [e.details() for e in errors]
    assert await served.rows(booking.booking_id) == before
    assert await served.bookings_of(served.alice_id) == 1
    assert served.participants.calls == calls_before


async def test_a_booking_that_does_not_exist_is_not_found(served: Served) -> None:
    error = await refusal(
        served.bookings.GetBooking(
            pb.GetBookingRequest(booking_id=str(uuid.uuid4())),
            metadata=served.alice,
            timeout=DEADLINE,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_saga_admin_needs_the_admin_token(served: Served) -> None:
    booking = await confirmed_booking(served)
    history = await served.bookings.GetBookingHistory(
        pb.GetBookingHistoryRequest(booking_id=booking.booking_id),
        metadata=served.alice,
        timeout=DEADLINE,
    )
    request = pb.GetSagaRequest(saga_id=history.saga_id)

    as_alice = await refusal(served.admin.GetSaga(request, metadata=served.alice, timeout=DEADLINE))
    as_admin = await served.admin.GetSaga(request, metadata=bearer(ADMIN_TOKEN), timeout=DEADLINE)

    assert as_alice.code() == grpc.StatusCode.PERMISSION_DENIED
    assert as_admin.saga.booking_id == booking.booking_id
