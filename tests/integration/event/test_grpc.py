"""The servicer over a real in-process gRPC server and database, called through the stub."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncEngine

from event_svc.bootstrap import ACCESS, server_parts
from event_svc.settings import Settings
from eventbooking.event.v1 import event_pb2 as pb
from eventbooking.event.v1.event_pb2_grpc import EventServiceStub
from eventbooking.paging import encode_token
from eventbooking.protoconv import timestamp
from tests.integration.event.callers import ADMIN, SERVICE, USER
from tests.integration.event.conftest import (
    STARTS,
    create_event,
    create_request,
    events_named,
    reservation_row,
    seats,
)


async def expect_error(call: Any, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is code, info.value.details()
    assert message in (info.value.details() or "")


async def test_create_get_and_reserve_round_trip(
    stub: EventServiceStub, engine: AsyncEngine
) -> None:
    event = await create_event(stub, capacity=5, price_cents=2000)
    assert uuid.UUID(event.event_id)
    assert event.starts_at.ToDatetime(tzinfo=UTC) == STARTS
    assert (event.available_seats, event.held_seats, event.sold_seats) == (5, 0, 0)

    rid = str(uuid.uuid4())
    reply = await stub.ReserveSeats(
        pb.ReserveSeatsRequest(reservation_id=rid, event_id=event.event_id, quantity=2),
        metadata=SERVICE,
    )
    held = reply.reservation
    assert (held.reservation_id, held.event_id, held.quantity) == (rid, event.event_id, 2)
    assert (held.amount_cents, held.status) == (4000, pb.RESERVATION_STATUS_HELD)
    assert held.HasField("expires_at")

    got = (await stub.GetEvent(pb.GetEventRequest(event_id=event.event_id), metadata=USER)).event
    assert (got.available_seats, got.held_seats, got.sold_seats) == (3, 2, 0)

    confirmed = (
        await stub.ConfirmReservation(
            pb.ConfirmReservationRequest(reservation_id=rid), metadata=SERVICE
        )
    ).reservation
    assert confirmed.status == pb.RESERVATION_STATUS_CONFIRMED
    got = (await stub.GetEvent(pb.GetEventRequest(event_id=event.event_id), metadata=USER)).event
    assert (got.available_seats, got.held_seats, got.sold_seats) == (3, 0, 2)

    released = (
        await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(reservation_id=rid), metadata=SERVICE
        )
    ).reservation
    assert released.status == pb.RESERVATION_STATUS_RELEASED
    assert (await seats(engine, event.event_id)).available == 5


async def test_the_same_reserve_twice_gets_the_same_reply(stub: EventServiceStub) -> None:
    event = await create_event(stub)
    request = pb.ReserveSeatsRequest(
        reservation_id=str(uuid.uuid4()), event_id=event.event_id, quantity=1, hold_seconds=60
    )
    first = await stub.ReserveSeats(request, metadata=SERVICE)
    second = await stub.ReserveSeats(request, metadata=SERVICE)
    assert second == first
    got = (await stub.GetEvent(pb.GetEventRequest(event_id=event.event_id), metadata=USER)).event
    assert got.held_seats == 1


async def test_release_of_an_unknown_id_returns_a_tombstone_and_refuses_the_late_reserve(
    stub: EventServiceStub, engine: AsyncEngine
) -> None:
    event = await create_event(stub)
    rid = str(uuid.uuid4())
    tomb = (
        await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(reservation_id=rid), metadata=SERVICE
        )
    ).reservation
    assert tomb.reservation_id == rid
    assert (tomb.event_id, tomb.quantity, tomb.amount_cents) == ("", 0, 0)
    assert tomb.status == pb.RESERVATION_STATUS_RELEASED
    assert not tomb.HasField("expires_at")
    await expect_error(
        stub.ReserveSeats(
            pb.ReserveSeatsRequest(reservation_id=rid, event_id=event.event_id, quantity=1),
            metadata=SERVICE,
        ),
        grpc.StatusCode.ABORTED,
        f"reservation {rid} was released before it arrived",
    )
    assert (await seats(engine, event.event_id)).held == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "name is required"),
        ({"name": "n" * 1_000_000}, "name is 1000000 characters long; the limit is 200"),
        ({"venue": "   "}, "venue is required"),
        ({"venue": "v" * 201}, "venue is 201 characters long"),
        ({"starts_at": None}, "starts_at is required"),
        ({"starts_at": Timestamp(seconds=10**12)}, "starts_at is not a valid time"),
        ({"capacity": 0}, "capacity must be between 1 and 100000, got 0"),
        ({"capacity": -3}, "capacity must be between 1 and 100000, got -3"),
        ({"capacity": 10**9}, "capacity must be between 1 and 100000, got 1000000000"),
        ({"price_cents": -1}, "price_cents must be between 0 and 10000000000, got -1"),
        ({"price_cents": 10**15}, "price_cents must be between 0 and 10000000000"),
    ],
)
async def test_create_event_refuses_bad_input_and_writes_nothing(
    stub: EventServiceStub, engine: AsyncEngine, overrides: dict[str, Any], message: str
) -> None:
    marker = f"refused {uuid.uuid4().hex}"
    request = create_request(**{"name": marker, **overrides})
    await expect_error(
        stub.CreateEvent(request, metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT, message
    )
    assert await events_named(engine, request.name) == 0
    assert await events_named(engine, marker) == 0


@pytest.mark.parametrize(
    ("event_id", "code", "message"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "event_id is required"),
        ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT, "event_id must be a UUID, got 'not-an-id'"),
        ("x" * 10_000, grpc.StatusCode.INVALID_ARGUMENT, "event_id must be a UUID, got 'xxx"),
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND, "does not exist"),
    ],
)
async def test_get_event_refuses_bad_or_unknown_ids(
    stub: EventServiceStub, event_id: str, code: grpc.StatusCode, message: str
) -> None:
    await expect_error(
        stub.GetEvent(pb.GetEventRequest(event_id=event_id), metadata=USER), code, message
    )


async def test_list_events_pages_with_tokens_and_refuses_bad_ones(stub: EventServiceStub) -> None:
    # A start time of its own, so other tests' events stay out of the way.
    far = datetime(2400, 1, 1, tzinfo=UTC) + timedelta(minutes=random.randrange(10**6))
    mine = {(await create_event(stub, starts_at=timestamp(far))).event_id for _ in range(3)}
    token = encode_token(far - timedelta(microseconds=1), uuid.UUID(int=0))
    seen: list[pb.Event] = []
    while token and len(seen) < 3:
        reply = await stub.ListEvents(
            pb.ListEventsRequest(page_size=2, page_token=token), metadata=USER
        )
        assert len(reply.events) <= 2
        seen += reply.events
        token = reply.next_page_token
    assert {e.event_id for e in seen[:3]} == mine
    assert [e.event_id for e in seen[:3]] == sorted(mine)

    await expect_error(
        stub.ListEvents(pb.ListEventsRequest(page_token="garbage!"), metadata=USER),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token is not a token this service returned",
    )
    await expect_error(
        stub.ListEvents(pb.ListEventsRequest(page_size=501), metadata=USER),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size must be between 1 and 500, got 501",
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reservation_id": ""}, "reservation_id is required"),
        ({"reservation_id": "r-1"}, "reservation_id must be a UUID, got 'r-1'"),
        ({"event_id": ""}, "event_id is required"),
        ({"event_id": "e" * 100}, "event_id must be a UUID"),
        ({"quantity": 0}, "quantity must be between 1 and 1000, got 0"),
        ({"quantity": -1}, "quantity must be between 1 and 1000, got -1"),
        ({"quantity": 10**9}, "quantity must be between 1 and 1000, got 1000000000"),
        ({"quantity": 6}, "quantity 6 is more than the 5 seats"),
        ({"hold_seconds": -1}, "hold_seconds must be between 1 and 3600"),
        ({"hold_seconds": 3601}, "hold_seconds must be between 1 and 3600"),
    ],
)
async def test_reserve_refuses_bad_input_and_writes_nothing(
    stub: EventServiceStub, engine: AsyncEngine, overrides: dict[str, Any], message: str
) -> None:
    event = await create_event(stub, capacity=5)
    fields: dict[str, Any] = {
        "reservation_id": str(uuid.uuid4()),
        "event_id": event.event_id,
        "quantity": 1,
    }
    fields.update(overrides)
    request = pb.ReserveSeatsRequest(**fields)
    await expect_error(
        stub.ReserveSeats(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT, message
    )
    if "reservation_id" not in overrides:
        assert await reservation_row(engine, request.reservation_id) is None
    after = await seats(engine, event.event_id)
    assert (after.held, after.sold) == (0, 0)


async def test_reserve_on_unknown_event_is_not_found_and_writes_nothing(
    stub: EventServiceStub, engine: AsyncEngine
) -> None:
    rid = str(uuid.uuid4())
    missing = str(uuid.uuid4())
    await expect_error(
        stub.ReserveSeats(
            pb.ReserveSeatsRequest(reservation_id=rid, event_id=missing, quantity=1),
            metadata=SERVICE,
        ),
        grpc.StatusCode.NOT_FOUND,
        f"event {missing} does not exist",
    )
    assert await reservation_row(engine, rid) is None


async def test_sold_out_is_failed_precondition_and_writes_nothing(
    stub: EventServiceStub, engine: AsyncEngine
) -> None:
    event = await create_event(stub, capacity=2)
    await stub.ReserveSeats(
        pb.ReserveSeatsRequest(
            reservation_id=str(uuid.uuid4()), event_id=event.event_id, quantity=2
        ),
        metadata=SERVICE,
    )
    rid = str(uuid.uuid4())
    await expect_error(
        stub.ReserveSeats(
            pb.ReserveSeatsRequest(reservation_id=rid, event_id=event.event_id, quantity=1),
            metadata=SERVICE,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "sold out: 0 seats available, 1 requested",
    )
    assert await reservation_row(engine, rid) is None
    assert (await seats(engine, event.event_id)).held == 2


@pytest.mark.parametrize(
    ("reservation_id", "code", "message"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "reservation_id is required"),
        ("nope", grpc.StatusCode.INVALID_ARGUMENT, "reservation_id must be a UUID, got 'nope'"),
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND, "does not exist"),
    ],
)
async def test_confirm_refuses_bad_or_unknown_ids(
    stub: EventServiceStub,
    engine: AsyncEngine,
    reservation_id: str,
    code: grpc.StatusCode,
    message: str,
) -> None:
    await expect_error(
        stub.ConfirmReservation(
            pb.ConfirmReservationRequest(reservation_id=reservation_id), metadata=SERVICE
        ),
        code,
        message,
    )
    if code is grpc.StatusCode.NOT_FOUND:
        assert await reservation_row(engine, reservation_id) is None


@pytest.mark.parametrize("reservation_id", ["", "123", "\x00" * 5])
async def test_release_refuses_bad_ids(stub: EventServiceStub, reservation_id: str) -> None:
    await expect_error(
        stub.ReleaseReservation(
            pb.ReleaseReservationRequest(reservation_id=reservation_id), metadata=SERVICE
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reservation_id",
    )


async def test_confirm_of_a_released_reservation_is_aborted(stub: EventServiceStub) -> None:
    event = await create_event(stub)
    rid = str(uuid.uuid4())
    await stub.ReserveSeats(
        pb.ReserveSeatsRequest(reservation_id=rid, event_id=event.event_id, quantity=1),
        metadata=SERVICE,
    )
    await stub.ReleaseReservation(
        pb.ReleaseReservationRequest(reservation_id=rid), metadata=SERVICE
    )
    await expect_error(
        stub.ConfirmReservation(pb.ConfirmReservationRequest(reservation_id=rid), metadata=SERVICE),
        grpc.StatusCode.ABORTED,
        "was released already",
    )


async def test_server_parts_sweep_lapsed_holds_in_the_background(
    event_settings: Settings, stub: EventServiceStub, engine: AsyncEngine
) -> None:
    settings = event_settings.model_copy(update={"sweep_interval_seconds": 0.05, "db_pool_size": 2})
    services, lifecycle = server_parts(settings)
    assert [s.name for s in services] == ["eventbooking.event.v1.EventService"]
    assert services[0].access == ACCESS
    # Made now, but it dials account_svc only at the first token it checks.
    assert lifecycle.token_lookup is not None
    for step in lifecycle.startup:
        await step()
    event = await create_event(stub, capacity=3)
    rid = str(uuid.uuid4())
    await stub.ReserveSeats(
        pb.ReserveSeatsRequest(
            reservation_id=rid, event_id=event.event_id, quantity=3, hold_seconds=1
        ),
        metadata=SERVICE,
    )
    jobs = [asyncio.create_task(job()) for job in lifecycle.background]
    try:
        for _ in range(100):
            row = await reservation_row(engine, rid)
            if row is not None and row.status == "EXPIRED":
                break
            await asyncio.sleep(0.05)
    finally:
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        for step in lifecycle.shutdown:
            await step()
    row = await reservation_row(engine, rid)
    assert row is not None
    assert row.status == "EXPIRED"
    assert (await seats(engine, event.event_id)).available == 3
