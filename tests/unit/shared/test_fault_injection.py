"""Faults on a real grpc.aio server built by `create_server`, with the real interceptor order.

A tiny ledger service records what it was asked, so a test can tell whether
the handler ran; the FaultService is driven with the admin token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from pydantic_settings import SettingsConfigDict

from eventbooking import auth, fault_injection
from eventbooking.faults.v1 import faults_pb2 as pb
from eventbooking.faults.v1 import faults_pb2_grpc as pb_grpc
from eventbooking.server import Service, authenticator, create_server
from eventbooking.settings import ServiceSettings

pytestmark = pytest.mark.timeout(30)

LEDGER = "test.v1.Ledger"
ADMIN_TOKEN = "admin-token-for-tests-only"
SERVICE_CREDENTIAL = "service-credential-for-tests"
USER_TOKEN = "a-user-token-for-fault-tests"
AS_ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
AS_SERVICE = (("authorization", f"Bearer {SERVICE_CREDENTIAL}"),)
AS_USER = (("authorization", f"Bearer {USER_TOKEN}"),)
ServicerContext = grpc.aio.ServicerContext[bytes, bytes]


class LedgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_SVC_", frozen=True, extra="ignore")


@dataclass
class Ledger:
    """Records every request it handled: the side effect a lost reply must keep."""

    records: list[bytes] = field(default_factory=list)

    async def record(self, request: bytes, context: ServicerContext) -> bytes:
        self.records.append(request)
        return b"recorded " + request

    async def replay(self, request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
        self.records.append(request)
        yield b"first"
        yield b"last"

    def service(self) -> Service:
        handler = grpc.method_handlers_generic_handler(
            LEDGER,
            {
                "Record": grpc.unary_unary_rpc_method_handler(self.record),
                "Replay": grpc.unary_stream_rpc_method_handler(self.replay),
            },
        )
        return Service(
            LEDGER,
            lambda server: server.add_generic_rpc_handlers((handler,)),
            access={
                f"/{LEDGER}/Record": auth.Access.SERVICE,
                f"/{LEDGER}/Replay": auth.Access.SERVICE,
            },
        )


async def lookup(token: str) -> uuid.UUID | None:
    return uuid.UUID(int=1) if token == USER_TOKEN else None


@dataclass
class Running:
    channel: grpc.aio.Channel
    ledger: Ledger
    faults: pb_grpc.FaultServiceStub

    async def record(self, request: bytes = b"r", *, metadata: Any = AS_SERVICE) -> str:
        """The status name of one Record call, and its message when it failed."""
        try:
            await self.channel.unary_unary(f"/{LEDGER}/Record")(
                request, metadata=metadata, timeout=5
            )
        except grpc.aio.AioRpcError as err:
            return f"{err.code().name}: {err.details()}"
        return "OK"

    async def replay(self, request: bytes = b"r") -> tuple[list[bytes], str]:
        items: list[bytes] = []
        try:
            async for item in self.channel.unary_stream(f"/{LEDGER}/Replay")(
                request, metadata=AS_SERVICE, timeout=5
            ):
                items.append(item)
        except grpc.aio.AioRpcError as err:
            return items, f"{err.code().name}: {err.details()}"
        return items, "OK"


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def run(
        rules: list[dict[str, Any]] | None = None,
        *,
        seed: int = 0,
        control: bool = True,
        exit: Callable[[int], NoReturn] | None = None,
    ) -> Running:
        settings = LedgerSettings(
            service_name="ledger_svc",
            host="127.0.0.1",
            port=0,
            admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
            service_credential=SERVICE_CREDENTIAL,  # type: ignore[arg-type]
            faults=json.dumps({"seed": seed, "rules": rules or []}),
            fault_control=control,
        )
        ledger = Ledger()
        services = [ledger.service()]
        injector = None
        if exit is not None:
            injector = fault_injection.Injector(
                settings.fault_plan(), service_name="ledger_svc", exit=exit
            )
        server, port = create_server(
            settings,
            services,
            health=HealthServicer(),
            authenticate=authenticator(settings, services, lookup),
            faults=injector,
        )
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return Running(channel, ledger, pb_grpc.FaultServiceStub(channel))

    yield run
    for channel in channels:
        await channel.close(None)
    for server in servers:
        await server.stop(None)


def counted(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "eventbooking_rpc_requests_total", {"service": LEDGER, "method": method, "code": code}
    )
    return value or 0.0


def on(method: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"service": "ledger_svc", "method": method, "kind": kind, **fields}


async def test_an_error_rule_answers_its_code_without_running_the_handler_and_is_counted(
    start: Start,
) -> None:
    running = await start([on("Record", "error", code="RESOURCE_EXHAUSTED", message="full")])
    before = counted("Record", "RESOURCE_EXHAUSTED")

    assert await running.record() == "RESOURCE_EXHAUSTED: full"

    assert running.ledger.records == []
    assert counted("Record", "RESOURCE_EXHAUSTED") == before + 1


async def test_a_count_rule_fails_the_next_n_calls_then_lets_them_through(start: Start) -> None:
    running = await start([on("*", "error", code="UNAVAILABLE", count=2)])

    outcomes = [(await running.record(b"%d" % i)).split(":")[0] for i in range(3)]
    listed = await running.faults.ListFaults(pb.ListFaultsRequest(), metadata=AS_ADMIN)

    assert outcomes == ["UNAVAILABLE", "UNAVAILABLE", "OK"]
    assert running.ledger.records == [b"2"]
    assert [(r.fired, r.remaining) for r in listed.rules] == [(2, 0)]


async def test_a_delay_rule_runs_the_handler_late(start: Start) -> None:
    running = await start([on("Record", "delay", seconds=0.3)])

    started = time.monotonic()
    outcome = await running.record()

    assert outcome == "OK"
    assert time.monotonic() - started >= 0.3
    assert running.ledger.records == [b"r"]


async def test_a_lost_reply_keeps_the_work_and_answers_unavailable(start: Start) -> None:
    running = await start([on("Record", "lost_reply", count=1)])
    before = counted("Record", "UNAVAILABLE")

    assert await running.record(b"paid") == "UNAVAILABLE: reply lost (injected)"

    assert running.ledger.records == [b"paid"], "the handler's work was done"
    assert counted("Record", "UNAVAILABLE") == before + 1
    assert await running.record(b"again") == "OK"


async def test_a_stream_error_comes_before_the_first_message(start: Start) -> None:
    running = await start([on("Replay", "error", code="ABORTED", message="stop")])

    assert await running.replay() == ([], "ABORTED: stop")
    assert running.ledger.records == []


async def test_a_stream_lost_reply_runs_the_handler_and_drops_its_messages(
    start: Start,
) -> None:
    running = await start([on("Replay", "lost_reply")])

    assert await running.replay() == ([], "UNAVAILABLE: reply lost (injected)")
    assert running.ledger.records == [b"r"]


async def test_a_stream_delay_then_every_message(start: Start) -> None:
    running = await start([on("Replay", "delay", seconds=0.2)])

    started = time.monotonic()
    assert await running.replay() == ([b"first", b"last"], "OK")
    assert time.monotonic() - started >= 0.2


class Exited(Exception):
    """Stands in for os._exit inside the test process."""


@pytest.mark.parametrize(("when", "handled"), [("before", []), ("after", [b"r"])])
async def test_a_crash_exits_87_before_or_after_the_handler(
    start: Start, when: str, handled: list[bytes]
) -> None:
    codes: list[int] = []

    def fake_exit(code: int) -> NoReturn:
        codes.append(code)
        raise Exited

    running = await start([on("Record", "crash", when=when)], exit=fake_exit)

    await running.record()

    assert codes == [fault_injection.EXIT_CODE]
    assert running.ledger.records == handled


async def test_rules_for_everything_spare_health_reflection_and_the_fault_service(
    start: Start,
) -> None:
    running = await start([{"service": "*", "method": "*", "kind": "error", "code": "INTERNAL"}])

    health = health_pb2_grpc.HealthStub(running.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    listed = await running.faults.ListFaults(pb.ListFaultsRequest(), metadata=AS_ADMIN)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert listed.rules[0].fired == 0
    assert (await running.record()).startswith("INTERNAL")


async def test_a_refused_caller_gets_the_access_check_not_a_fault(start: Start) -> None:
    running = await start([on("Record", "error", code="DATA_LOSS")])

    outcome = await running.record(metadata=())
    listed = await running.faults.ListFaults(pb.ListFaultsRequest(), metadata=AS_ADMIN)

    assert outcome.startswith("UNAUTHENTICATED")
    assert listed.rules[0].fired == 0


async def test_set_list_and_clear_change_the_faults_at_runtime(start: Start) -> None:
    running = await start()
    rule = pb.FaultRule(
        service="Ledger", method="Record", kind=pb.FAULT_KIND_LOST_REPLY, probability=0.5
    )

    await running.faults.SetFaults(pb.SetFaultsRequest(rules=[rule], seed=11), metadata=AS_ADMIN)
    first = [await running.record() for _ in range(20)]
    await running.faults.SetFaults(pb.SetFaultsRequest(rules=[rule], seed=11), metadata=AS_ADMIN)
    second = [await running.record() for _ in range(20)]
    listed = await running.faults.ListFaults(pb.ListFaultsRequest(), metadata=AS_ADMIN)
    cleared = await running.faults.ClearFaults(pb.ClearFaultsRequest(), metadata=AS_ADMIN)
    after = [await running.record() for _ in range(5)]

    assert first == second, "the same seed repeats the same faults"
    assert 0 < first.count("OK") < 20
    assert listed.seed == 11
    assert listed.rules[0].rule == rule
    assert listed.rules[0].fired == 20 - second.count("OK")
    assert cleared.cleared == 1
    assert after == ["OK"] * 5
    assert len(running.ledger.records) == 45, "lost replies did the work too"


async def test_a_bad_rule_set_at_runtime_is_refused_naming_the_rule(start: Start) -> None:
    running = await start([on("Record", "lost_reply")])
    good = pb.FaultRule(service="*", method="*", kind=pb.FAULT_KIND_LOST_REPLY)
    bad = pb.FaultRule(service="*", method="*", kind=pb.FAULT_KIND_ERROR, code="NOPE")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.faults.SetFaults(pb.SetFaultsRequest(rules=[good, bad]), metadata=AS_ADMIN)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fault rule 2" in str(refused.value.details())
    assert "code must be a gRPC status code name" in str(refused.value.details())
    listed = await running.faults.ListFaults(pb.ListFaultsRequest(), metadata=AS_ADMIN)
    assert [r.rule.kind for r in listed.rules] == [pb.FAULT_KIND_LOST_REPLY], "rules unchanged"


async def test_the_fault_service_is_off_unless_the_setting_enables_it(start: Start) -> None:
    running = await start([on("Record", "lost_reply", count=1)], control=False)

    for call, request in (
        (running.faults.SetFaults, pb.SetFaultsRequest()),
        (running.faults.ListFaults, pb.ListFaultsRequest()),
        (running.faults.ClearFaults, pb.ClearFaultsRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request, metadata=AS_ADMIN)  # type: ignore[operator]
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            "fault control is off; start the service with LEDGER_SVC_FAULT_CONTROL=true"
        )

    # Rules from the settings still apply without the control.
    assert (await running.record()).startswith("UNAVAILABLE")


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (AS_USER, grpc.StatusCode.PERMISSION_DENIED),
        (AS_SERVICE, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_the_admin_may_call_the_fault_service(
    start: Start, metadata: Any, code: grpc.StatusCode
) -> None:
    running = await start()

    for call, request in (
        (running.faults.SetFaults, pb.SetFaultsRequest()),
        (running.faults.ListFaults, pb.ListFaultsRequest()),
        (running.faults.ClearFaults, pb.ClearFaultsRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request, metadata=metadata)  # type: ignore[operator]
        assert refused.value.code() == code


async def listed_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5):
        return sorted(s.name for s in reply.list_services_response.service)
    return []


@pytest.mark.parametrize("control", [True, False])
async def test_reflection_lists_the_fault_service_only_where_the_control_is_on(
    start: Start, control: bool
) -> None:
    running = await start(control=control)

    names = await listed_services(running.channel)

    assert LEDGER in names
    assert (fault_injection.SERVICE_NAME in names) is control
