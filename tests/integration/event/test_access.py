"""Who may call each EventService RPC, over the in-process server with its real checks.

Every refusal gets its status code, leaves the seats and events as they
were, and names no token in its message or in the logs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventbooking.event.v1 import event_pb2 as pb
from eventbooking.event.v1.event_pb2_grpc import EventServiceStub
from tests.integration.event.callers import (
    ADMIN,
    ALL_TOKENS,
    OTHER_USER_TOKEN,
    SERVICE,
    UNKNOWN_TOKEN,
    USER,
    USER_TOKEN,
    Metadata,
    bearer,
)
from tests.integration.event.conftest import (
    Seats,
    create_event,
    create_request,
    events_named,
    reservation_row,
    seats,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Code = grpc.StatusCode
USER_RPCS = ("GetEvent", "ListEvents")
SERVICE_RPCS = ("ReserveSeats", "ConfirmReservation", "ReleaseReservation")
ALL_RPCS = ("CreateEvent", *USER_RPCS, *SERVICE_RPCS)

CALLERS: dict[str, Metadata] = {
    "no token": (),
    "an unknown token": bearer(UNKNOWN_TOKEN),
    "a header that is not Bearer": (("authorization", f"Basic {USER_TOKEN}"),),
    "an empty Bearer": (("authorization", "Bearer "),),
    "a user token": USER,
    "another user's token": bearer(OTHER_USER_TOKEN),
    "the admin token": ADMIN,
    "the service credential": SERVICE,
}

REFUSALS: list[tuple[str, str, grpc.StatusCode]] = [
    *[
        (rpc, caller, Code.UNAUTHENTICATED)
        for rpc in ALL_RPCS
        for caller in (
            "no token",
            "an unknown token",
            "a header that is not Bearer",
            "an empty Bearer",
        )
    ],
    *[
        (rpc, caller, Code.PERMISSION_DENIED)
        for rpc in ("CreateEvent", *SERVICE_RPCS)
        for caller in ("a user token", "another user's token")
    ],
    *[(rpc, "the admin token", Code.PERMISSION_DENIED) for rpc in SERVICE_RPCS],
    *[
        (rpc, "the service credential", Code.PERMISSION_DENIED)
        for rpc in ("CreateEvent", *USER_RPCS)
    ],
]

ALLOWED: list[tuple[str, str]] = [
    ("CreateEvent", "the admin token"),
    *[(rpc, caller) for rpc in USER_RPCS for caller in ("a user token", "the admin token")],
    *[(rpc, "the service credential") for rpc in SERVICE_RPCS],
]


@dataclass(frozen=True)
class Scene:
    """An event with two seats held by one reservation, and a fresh event name."""

    event_id: str
    held_id: str
    new_name: str


REQUESTS: dict[str, Callable[[Scene], Any]] = {
    "CreateEvent": lambda s: create_request(name=s.new_name),
    "GetEvent": lambda s: pb.GetEventRequest(event_id=s.event_id),
    "ListEvents": lambda s: pb.ListEventsRequest(page_size=1),
    "ReserveSeats": lambda s: pb.ReserveSeatsRequest(
        reservation_id=str(uuid.uuid4()), event_id=s.event_id, quantity=1
    ),
    "ConfirmReservation": lambda s: pb.ConfirmReservationRequest(reservation_id=s.held_id),
    "ReleaseReservation": lambda s: pb.ReleaseReservationRequest(reservation_id=s.held_id),
}


async def scene(stub: EventServiceStub) -> Scene:
    event = await create_event(stub, capacity=5)
    held_id = str(uuid.uuid4())
    await stub.ReserveSeats(
        pb.ReserveSeatsRequest(reservation_id=held_id, event_id=event.event_id, quantity=2),
        metadata=SERVICE,
    )
    return Scene(event.event_id, held_id, f"refused {uuid.uuid4().hex}")


def no_secret_in(text: str) -> None:
    for token in ALL_TOKENS:
        assert token not in text


@pytest.mark.parametrize(("rpc", "caller", "code"), REFUSALS)
async def test_a_refused_call_gets_its_code_changes_nothing_and_names_no_token(
    stub: EventServiceStub,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    rpc: str,
    caller: str,
    code: grpc.StatusCode,
) -> None:
    caplog.set_level(logging.DEBUG)
    given = await scene(stub)
    request = REQUESTS[rpc](given)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, rpc)(request, metadata=CALLERS[caller])

    assert refused.value.code() is code, refused.value.details()
    no_secret_in(refused.value.details() or "")
    no_secret_in(str(refused.value))
    no_secret_in(caplog.text)
    assert await seats(engine, given.event_id) == Seats(
        capacity=5, held=2, sold=0, held_rows=2, sold_rows=0
    )
    held = await reservation_row(engine, given.held_id)
    assert held is not None
    assert held.status == "HELD"
    if rpc == "ReserveSeats":
        assert await reservation_row(engine, request.reservation_id) is None
    assert await events_named(engine, given.new_name) == 0


@pytest.mark.parametrize(("rpc", "caller"), ALLOWED)
async def test_the_right_caller_gets_through(stub: EventServiceStub, rpc: str, caller: str) -> None:
    request = REQUESTS[rpc](await scene(stub))
    await getattr(stub, rpc)(request, metadata=CALLERS[caller])
