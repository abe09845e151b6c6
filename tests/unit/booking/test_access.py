"""Who may call what on booking_svc: every RPC on a real gRPC server with its access checks.

The server runs in-process over the fakes (no database); tokens of accounts
come from a fake lookup, as account_svc would answer them. Each refused call
is checked to change nothing: no booking, saga, log row or participant call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from booking_svc.domain.model import Booking, SagaInstance
from booking_svc.domain.states import BookingStatus, SagaStatus
from booking_svc.entrypoints.grpc_server import (
    ACCESS,
    ADMIN_ACCESS,
    ADMIN_SERVICE_NAME,
    SERVICE_NAME,
    grpc_services,
)
from booking_svc.service_layer.limits import BookingRateLimit
from eventbooking.auth import Access
from eventbooking.booking.v1 import booking_pb2 as pb
from eventbooking.booking.v1 import booking_pb2_grpc as pb_grpc
from eventbooking.server import authenticator, create_server
from tests.unit.booking.fakes import (
    ADMIN_TOKEN,
    SERVICE_CREDENTIAL,
    FakeAccountTokens,
    FakeMonotonic,
    World,
    bearer,
    refused,
)

pytestmark = pytest.mark.timeout(30)

DEADLINE = 5
Metadata = Sequence[tuple[str, str]]
WRONG_TOKEN = "not-a-token-anyone-was-given"


@dataclass
class Served:
    """A booking server over `world`, stubs to call it, and the tokens of two accounts."""

    world: World
    tokens: FakeAccountTokens
    bookings: pb_grpc.BookingServiceStub
    admin: pb_grpc.SagaAdminServiceStub
    health: health_pb2_grpc.HealthStub
    alice: str
    bob: str
    bob_id: uuid.UUID

    def as_(self, who: str) -> Metadata:
        """The metadata of a call made as `who`."""
        return {
            "nobody": (),
            "alice": bearer(self.alice),
            "bob": bearer(self.bob),
            "admin": bearer(ADMIN_TOKEN),
            "service": bearer(SERVICE_CREDENTIAL),
            "wrong": bearer(WRONG_TOKEN),
            "malformed": (("authorization", f"Basic {self.alice}"),),
        }[who]

    def secret_of(self, who: str) -> str | None:
        """The token a caller presents, to check no error message repeats it."""
        return {
            "alice": self.alice,
            "bob": self.bob,
            "admin": ADMIN_TOKEN,
            "service": SERVICE_CREDENTIAL,
            "wrong": WRONG_TOKEN,
            "malformed": self.alice,
        }.get(who)


@contextlib.asynccontextmanager
async def serving(world: World) -> AsyncIterator[Served]:
    """A server with the booking services and their access tables, as `serve` builds it."""
    tokens = FakeAccountTokens()
    services = grpc_services(world.app.handlers, max_wait_seconds=DEADLINE)
    server, port = create_server(
        world.settings,
        services,
        health=HealthServicer(),
        authenticate=authenticator(world.settings, services, tokens),
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    bob_id = uuid.uuid4()
    try:
        yield Served(
            world=world,
            tokens=tokens,
            bookings=pb_grpc.BookingServiceStub(channel),
            admin=pb_grpc.SagaAdminServiceStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
            alice=tokens.issue(world.account_id),
            bob=tokens.issue(bob_id),
            bob_id=bob_id,
        )
    finally:
        await channel.close(None)
        await server.stop(None)
        await world.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(World(host="127.0.0.1", port=0)) as s:
        yield s


@pytest.fixture
async def alices_booking(served: Served) -> Booking:
    """A CONFIRMED booking of alice's."""
    booking = await served.world.book()
    await served.world.settle()
    return served.world.booking(booking.booking_id)


def snapshot(world: World) -> tuple[Any, ...]:
    """Everything a call could change: the booking database and the participants."""
    store = world.store
    return (
        dict(store.bookings),
        dict(store.sagas),
        len(store.rows),
        store.commits,
        list(world.participants.calls),
    )


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# Every BookingService RPC, called on `booking` (or its account) as whoever `metadata` says.
Rpc = Callable[[Served, Booking, Metadata], Awaitable[Any]]


async def create_booking(s: Served, b: Booking, md: Metadata) -> Any:
    request = pb.CreateBookingRequest(
        account_id=str(b.account_id),
        event_id=str(b.event_id),
        quantity=1,
        idempotency_key=f"key-{uuid.uuid4()}",
    )
    return await s.bookings.CreateBooking(request, metadata=md, timeout=DEADLINE)


async def get_booking(s: Served, b: Booking, md: Metadata) -> Any:
    request = pb.GetBookingRequest(booking_id=str(b.booking_id))
    return await s.bookings.GetBooking(request, metadata=md, timeout=DEADLINE)


async def list_bookings(s: Served, b: Booking, md: Metadata) -> Any:
    request = pb.ListBookingsRequest(account_id=str(b.account_id))
    return await s.bookings.ListBookings(request, metadata=md, timeout=DEADLINE)


async def cancel_booking(s: Served, b: Booking, md: Metadata) -> Any:
    request = pb.CancelBookingRequest(booking_id=str(b.booking_id))
    return await s.bookings.CancelBooking(request, metadata=md, timeout=DEADLINE)


async def get_booking_history(s: Served, b: Booking, md: Metadata) -> Any:
    request = pb.GetBookingHistoryRequest(booking_id=str(b.booking_id))
    return await s.bookings.GetBookingHistory(request, metadata=md, timeout=DEADLINE)


async def watch_booking(s: Served, b: Booking, md: Metadata) -> Any:
    request = pb.WatchBookingRequest(booking_id=str(b.booking_id))
    # The booking is settled, so the stream sends it once and ends.
    return [
        reply async for reply in s.bookings.WatchBooking(request, metadata=md, timeout=DEADLINE)
    ]


USER_RPCS: dict[str, Rpc] = {
    "CreateBooking": create_booking,
    "GetBooking": get_booking,
    "ListBookings": list_bookings,
    "CancelBooking": cancel_booking,
    "GetBookingHistory": get_booking_history,
    "WatchBooking": watch_booking,
}
ON_A_BOOKING = ["GetBooking", "CancelBooking", "GetBookingHistory", "WatchBooking"]

REFUSED = [
    ("nobody", grpc.StatusCode.UNAUTHENTICATED),
    ("wrong", grpc.StatusCode.UNAUTHENTICATED),
    ("malformed", grpc.StatusCode.UNAUTHENTICATED),
    ("bob", grpc.StatusCode.PERMISSION_DENIED),
    ("service", grpc.StatusCode.PERMISSION_DENIED),
]


def test_the_access_tables_name_every_method_of_both_services() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(ACCESS) | set(ADMIN_ACCESS) == methods
    assert set(ACCESS) == {f"/{SERVICE_NAME}/{name}" for name in USER_RPCS}
    assert set(ACCESS.values()) == {Access.USER}
    assert {m.split("/")[1] for m in ADMIN_ACCESS} == {ADMIN_SERVICE_NAME}
    assert set(ADMIN_ACCESS.values()) == {Access.ADMIN}


@pytest.mark.parametrize("rpc", USER_RPCS)
@pytest.mark.parametrize(("who", "code"), REFUSED)
async def test_a_refused_caller_gets_its_code_and_changes_nothing(
    served: Served, alices_booking: Booking, rpc: str, who: str, code: grpc.StatusCode
) -> None:
    before = snapshot(served.world)

    error = await refusal(USER_RPCS[rpc](served, alices_booking, served.as_(who)))
    await served.world.settle()

    assert error.code() == code, error.details()
    assert snapshot(served.world) == before
    secret = served.secret_of(who)
    assert secret is None or secret not in (error.details() or "")


@pytest.mark.parametrize("rpc", USER_RPCS)
@pytest.mark.parametrize("who", ["alice", "admin"])
async def test_the_owner_and_the_admin_may_make_every_call(
    served: Served, alices_booking: Booking, rpc: str, who: str
) -> None:
    reply = await USER_RPCS[rpc](served, alices_booking, served.as_(who))
    assert reply


async def test_the_owner_sees_the_booking_it_made(served: Served) -> None:
    made = await served.bookings.CreateBooking(
        pb.CreateBookingRequest(
            account_id=str(served.world.account_id),
            event_id=str(served.world.event_id),
            quantity=2,
            idempotency_key="order-1",
            wait_for_outcome=True,
        ),
        metadata=served.as_("alice"),
        timeout=DEADLINE,
    )
    listed = await served.bookings.ListBookings(
        pb.ListBookingsRequest(account_id=str(served.world.account_id)),
        metadata=served.as_("alice"),
        timeout=DEADLINE,
    )

    assert made.booking.status == pb.BOOKING_STATUS_CONFIRMED
    assert [b.booking_id for b in listed.bookings] == [made.booking.booking_id]


async def test_a_user_may_book_for_itself_but_not_for_another_account(served: Served) -> None:
    mine = pb.CreateBookingRequest(
        account_id=str(served.bob_id),
        event_id=str(served.world.event_id),
        quantity=1,
        idempotency_key="bobs-own",
    )
    reply = await served.bookings.CreateBooking(mine, metadata=served.as_("bob"), timeout=DEADLINE)
    theirs = pb.CreateBookingRequest(
        account_id=str(served.world.account_id),
        event_id=str(served.world.event_id),
        quantity=1,
        idempotency_key="on-alices-account",
    )
    error = await refusal(
        served.bookings.CreateBooking(theirs, metadata=served.as_("bob"), timeout=DEADLINE)
    )

    assert reply.booking.account_id == str(served.bob_id)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert str(served.world.account_id) in (error.details() or "")
    assert {b.account_id for b in served.world.store.bookings.values()} == {served.bob_id}


@pytest.mark.parametrize("rpc", ON_A_BOOKING)
@pytest.mark.parametrize("who", ["alice", "bob"])
async def test_a_booking_that_does_not_exist_is_not_found_for_anyone(
    served: Served, alices_booking: Booking, rpc: str, who: str
) -> None:
    # Alice's account, an id nobody made.
    missing = dataclasses.replace(alices_booking, booking_id=uuid.uuid4())
    error = await refusal(USER_RPCS[rpc](served, missing, served.as_(who)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_pending_booking_of_another_account_is_not_cancelled(served: Served) -> None:
    gate = served.world.participants.gate("charge")
    booking = await served.world.book()
    await gate.reached.wait()

    error = await refusal(cancel_booking(served, booking, served.as_("bob")))
    gate.open()
    await served.world.settle()

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert served.world.booking(booking.booking_id).status is BookingStatus.CONFIRMED
    assert not served.world.saga(booking.booking_id).cancel_requested


async def test_health_needs_no_token(served: Served) -> None:
    reply = await served.health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# SagaAdminService: the admin token only.


@pytest.fixture
async def stuck(served: Served) -> SagaInstance:
    """A saga STUCK at its notify step, which an operator may retry."""
    served.world.participants.script("send_notification", refused("no such address"))
    booking = await served.world.book()
    await served.world.settle()
    saga = served.world.saga(booking.booking_id)
    assert saga.status is SagaStatus.STUCK
    return saga


AdminRpc = Callable[[Served, str, Metadata], Awaitable[Any]]

ADMIN_RPCS: dict[str, AdminRpc] = {
    "ListSagas": lambda s, saga_id, md: s.admin.ListSagas(
        pb.ListSagasRequest(), metadata=md, timeout=DEADLINE
    ),
    "GetSaga": lambda s, saga_id, md: s.admin.GetSaga(
        pb.GetSagaRequest(saga_id=saga_id), metadata=md, timeout=DEADLINE
    ),
    "RetrySaga": lambda s, saga_id, md: s.admin.RetrySaga(
        pb.RetrySagaRequest(saga_id=saga_id), metadata=md, timeout=DEADLINE
    ),
    "CompensateSaga": lambda s, saga_id, md: s.admin.CompensateSaga(
        pb.CompensateSagaRequest(saga_id=saga_id), metadata=md, timeout=DEADLINE
    ),
}


def test_the_admin_table_covers_every_admin_rpc_tested_here() -> None:
    assert set(ADMIN_ACCESS) == {f"/{ADMIN_SERVICE_NAME}/{name}" for name in ADMIN_RPCS}


@pytest.mark.parametrize("rpc", ADMIN_RPCS)
@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("nobody", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        ("alice", grpc.StatusCode.PERMISSION_DENIED),
        ("service", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_saga_admin_without_the_admin_token_is_refused_and_moves_no_saga(
    served: Served, stuck: SagaInstance, rpc: str, who: str, code: grpc.StatusCode
) -> None:
    before = snapshot(served.world)

    error = await refusal(ADMIN_RPCS[rpc](served, str(stuck.saga_id), served.as_(who)))
    await served.world.settle()

    assert error.code() == code, error.details()
    assert snapshot(served.world) == before
    assert served.world.store.sagas[stuck.saga_id].status is SagaStatus.STUCK


async def test_the_admin_may_list_inspect_and_repair_sagas(
    served: Served, stuck: SagaInstance
) -> None:
    admin = served.as_("admin")
    listed = await ADMIN_RPCS["ListSagas"](served, "", admin)
    shown = await ADMIN_RPCS["GetSaga"](served, str(stuck.saga_id), admin)
    retried = await ADMIN_RPCS["RetrySaga"](served, str(stuck.saga_id), admin)
    await served.world.settle()
    again = await refusal(ADMIN_RPCS["CompensateSaga"](served, str(stuck.saga_id), admin))

    assert [s.saga_id for s in listed.sagas] == [str(stuck.saga_id)]
    assert shown.saga.status == pb.SAGA_STATUS_STUCK
    assert retried.saga.status == pb.SAGA_STATUS_RUNNING
    assert served.world.store.sagas[stuck.saga_id].status is SagaStatus.COMPLETED
    # Past the access check: refused for the saga's state, not for the caller.
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


# The rate limit on CreateBooking, over gRPC.

PER_SECOND = 2


@pytest.fixture
def time() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
async def limited(time: FakeMonotonic) -> AsyncIterator[Served]:
    world = World(host="127.0.0.1", port=0, rate_limit=BookingRateLimit(PER_SECOND, now=time))
    async with serving(world) as s:
        yield s


async def book_as(s: Served, who: str, account_id: uuid.UUID) -> Any:
    request = pb.CreateBookingRequest(
        account_id=str(account_id),
        event_id=str(s.world.event_id),
        quantity=1,
        idempotency_key=f"key-{uuid.uuid4()}",
    )
    return await s.bookings.CreateBooking(request, metadata=s.as_(who), timeout=DEADLINE)


async def test_past_the_limit_create_booking_is_resource_exhausted_naming_it(
    limited: Served, time: FakeMonotonic
) -> None:
    alice = limited.world.account_id
    for _ in range(2 * PER_SECOND):
        await book_as(limited, "alice", alice)
    await limited.world.settle()
    before = snapshot(limited.world)

    error = await refusal(book_as(limited, "alice", alice))
    await limited.world.settle()
    unchanged = snapshot(limited.world) == before
    others = await book_as(limited, "bob", limited.bob_id)
    time.advance(1 / PER_SECOND)
    later = await book_as(limited, "alice", alice)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limit of {PER_SECOND} booking attempts per second" in (error.details() or "")
    assert unchanged, "the refused attempt changed something"
    assert others.booking.account_id == str(limited.bob_id)
    assert later.booking.account_id == str(alice)
    assert len(limited.world.store.bookings) == 2 * PER_SECOND + 2


async def test_refused_attempts_on_another_account_do_not_spend_its_share(
    limited: Served,
) -> None:
    alice = limited.world.account_id
    for _ in range(5 * PER_SECOND):
        error = await refusal(book_as(limited, "bob", alice))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    for _ in range(2 * PER_SECOND):
        await book_as(limited, "alice", alice)


async def test_the_admin_lists_every_accounts_bookings_with_an_empty_account_id(
    served: Served,
) -> None:
    made = []
    for who, account in (("alice", served.world.account_id), ("bob", served.bob_id)):
        reply = await served.bookings.CreateBooking(
            pb.CreateBookingRequest(
                account_id=str(account),
                event_id=str(served.world.event_id),
                quantity=1,
                idempotency_key=f"{who}-order",
                wait_for_outcome=True,
            ),
            metadata=served.as_(who),
            timeout=DEADLINE,
        )
        made.append(reply.booking)

    seen: list[pb.Booking] = []
    token = ""
    while True:
        page = await served.bookings.ListBookings(
            pb.ListBookingsRequest(page_size=1, page_token=token),
            metadata=served.as_("admin"),
            timeout=DEADLINE,
        )
        seen += page.bookings
        token = page.next_page_token
        if not token:
            break

    assert {b.booking_id for b in seen} == {b.booking_id for b in made}
    assert {b.idempotency_key for b in seen} == {"alice-order", "bob-order"}


@pytest.mark.parametrize("who", ["alice", "bob", "service"])
async def test_only_the_admin_may_list_without_naming_an_account(
    served: Served, alices_booking: Booking, who: str
) -> None:
    error = await refusal(
        served.bookings.ListBookings(
            pb.ListBookingsRequest(), metadata=served.as_(who), timeout=DEADLINE
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
