"""Generated requests, well-formed or not, thrown at every RPC of the live servers.

Hypothesis builds each request from the method's message descriptor: random
and huge strings, unicode, real and made-up ids, huge and negative numbers,
unknown enum values, times out of range, fields left out, and any of the
credentials (none, garbage, an account's token, the admin token, the
service credential). Whatever comes in, a server answers with a status
that names the problem, never INTERNAL or UNKNOWN, and stays up; and the
seat and money invariants still hold afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbooking.account.v1 import account_pb2
from eventbooking.booking.v1 import booking_pb2
from eventbooking.event.v1 import event_pb2
from eventbooking.local import LocalSystem
from eventbooking.notification.v1 import notification_pb2
from tests.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Bad answers: a server that says these did not understand its own failure.
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVICES = {
    "account_svc": account_pb2.DESCRIPTOR.services_by_name["AccountService"],
    "event_svc": event_pb2.DESCRIPTOR.services_by_name["EventService"],
    "booking_svc": booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
    "notification_svc": notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
}
ADMIN_SERVICES = {"booking_svc": booking_pb2.DESCRIPTOR.services_by_name["SagaAdminService"]}
# Any unicode a client can send: everything but lone surrogates, which are not UTF-8.
TEXT = st.characters(exclude_categories=("Cs",))
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}


@dataclass
class World:
    """What the generated requests may name: real ids and real credentials."""

    system: LocalSystem
    client: Client
    ids: list[str]
    tokens: list[str | None]
    events: list[str]
    accounts: list[str]


@pytest.fixture(scope="module")
def world(guarded: LocalSystem) -> Iterator[World]:
    client = Client(guarded.ports, admin_token=guarded.admin_token())
    accounts = [client.account(balance_cents=50_000) for _ in range(2)]
    events = [client.event(capacity=20, price_cents=700) for _ in range(2)]
    bookings = [client.book(accounts[0], events[0]).booking_id for _ in range(2)]
    service_credential = (guarded.home / "secrets" / "service_credential").read_text().strip()
    tokens: list[str | None] = [
        None,
        "not-a-token",
        client.token(accounts[0]),
        client.token(accounts[1]),
        guarded.admin_token(),
        service_credential,
    ]
    yield World(guarded, client, [*accounts, *events, *bookings], tokens, events, accounts)
    client.close()


def _field_values(field: FieldDescriptor, world: World) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(
            st.sampled_from(world.ids),
            st.just(""),
            st.text(TEXT, max_size=64),
            st.text(TEXT, min_size=300, max_size=2000),
            st.builds(lambda: str(uuid.uuid4())),
        )
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.one_of(st.integers(-3, 1001), st.integers(low, high))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)
    if (
        field.message_type is not None
        and field.message_type.full_name == "google.protobuf.Timestamp"
    ):
        return st.builds(
            lambda seconds, nanos: {"seconds": seconds, "nanos": nanos},
            st.integers(-(2**40), 2**40),
            st.integers(0, 999_999_999),
        )
    return st.nothing()


def _requests(descriptor: Descriptor, world: World) -> st.SearchStrategy[dict[str, Any]]:
    fields = {f.name: _field_values(f, world) for f in descriptor.fields if not f.is_repeated}
    return st.fixed_dictionaries({}, optional=fields)


def _build(descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = GetMessageClass(descriptor)()
    for name, value in values.items():
        if isinstance(value, dict):
            getattr(message, name).seconds = value["seconds"]
            getattr(message, name).nanos = value["nanos"]
        else:
            setattr(message, name, value)
    return message


def _calls(
    world: World,
) -> st.SearchStrategy[tuple[str, MethodDescriptor, dict[str, Any], str | None]]:
    methods = [
        (module, method)
        for table in (SERVICES, ADMIN_SERVICES)
        for module, service in table.items()
        for method in service.methods
    ]
    return st.sampled_from(methods).flatmap(
        lambda pair: st.tuples(
            st.just(pair[0]),
            st.just(pair[1]),
            _requests(pair[1].input_type, world),
            st.sampled_from(world.tokens),
        )
    )


def _invoke(
    world: World, module: str, method: MethodDescriptor, request: Message, token: str | None
) -> grpc.StatusCode:
    channel = grpc.insecure_channel(f"127.0.0.1:{world.system.ports[module]}")
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    response_class = GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            call = channel.unary_stream(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            for _ in call(request, metadata=metadata, timeout=1.5):
                break
        else:
            call = channel.unary_unary(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            call(request, metadata=metadata, timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()
    finally:
        channel.close()


def test_no_generated_request_gets_internal_or_unknown_or_kills_a_server(world: World) -> None:
    seen: dict[str, set[str]] = {}

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_calls(world))
    def throw(call: tuple[str, MethodDescriptor, dict[str, Any], str | None]) -> None:
        module, method, values, token = call
        code = _invoke(world, module, method, _build(method.input_type, values), token)
        seen.setdefault(method.name, set()).add(code.name)
        assert code not in NEVER, f"{method.name}({values}) answered {code.name}"

    throw()

    for module, port in world.system.ports.items():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, module
    # Every RPC was reached, so every RPC was tested.
    every = {
        m.name for table in (SERVICES, ADMIN_SERVICES) for s in table.values() for m in s.methods
    }
    assert set(seen) == every, sorted(every - set(seen))
    _invariants_hold(world)


def _invariants_hold(world: World) -> None:
    client = world.client
    for event_id in world.events:
        event = client.seats(event_id)
        assert min(event.available_seats, event.held_seats, event.sold_seats) >= 0
        assert event.available_seats + event.held_seats + event.sold_seats == event.capacity
    for account_id in world.accounts:
        balance = client.balance(account_id)
        assert balance >= 0
        assert balance == client.ledger_total(account_id)
