"""Server scaffolding shared by every service.

`create_server` builds a grpc.aio server with tracing, RPC metrics, the
error interceptor, the access checks and fault injection, the standard
health service, reflection and the FaultService, bound to the configured
port (0 for tests). `serve` runs one: it exposes the Prometheus
metrics, reports NOT_SERVING until `startup` (migrations) has finished, then
SERVING, stops gracefully on SIGTERM or SIGINT, and flushes the spans last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from eventbooking import auth, fault_injection, logs, metrics, telemetry
from eventbooking.interceptors import ErrorInterceptor
from eventbooking.settings import ServiceSettings, load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    """A servicer to register, with its full name for health and reflection."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    # Who may call each method, by full path ("/pkg.Service/Method"); see eventbooking.auth.
    access: Mapping[str, auth.Access] = field(default_factory=dict)


@dataclass(frozen=True)
class Lifecycle:
    """What a service runs around its servicers: before serving, beside it, after it."""

    startup: Sequence[Callable[[], Awaitable[None]]] = ()
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    # Runs once the server reports NOT_SERVING, before it waits for in-flight calls.
    stopping: Sequence[Callable[[], Awaitable[None]]] = ()
    shutdown: Sequence[Callable[[], Awaitable[None]]] = ()
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = field(
        default_factory=tuple
    )
    # How bearer tokens of accounts are checked: locally in account_svc, by asking it elsewhere.
    token_lookup: auth.TokenLookup | None = None


# Every server has the FaultService; changing a server's faults is the operators' business.
FAULT_ACCESS: Mapping[str, auth.Access] = {
    f"/{fault_injection.SERVICE_NAME}/{method}": auth.Access.ADMIN
    for method in ("SetFaults", "ListFaults", "ClearFaults")
}


def fault_injector(settings: ServiceSettings) -> fault_injection.Injector:
    """The faults of a server, from its settings (validated when they were loaded)."""
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    return fault_injection.Injector(
        settings.fault_plan(),
        service_name=settings.service_name,
        control=settings.fault_control,
        control_variable=f"{prefix}FAULT_CONTROL",
    )


class PortInUse(RuntimeError):
    """The server could not bind its port."""


def create_server(
    settings: ServiceSettings,
    services: Sequence[Service],
    *,
    health: HealthServicer,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    authenticate: auth.AuthInterceptor | None = None,
    faults: fault_injection.Injector | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Build a server with `services`, health and reflection; return it and its bound port.

    `serve` always passes `authenticate`; only tests of a servicer alone leave it out.
    `faults` defaults to the rules of `settings`; the FaultService changes them at runtime.
    """
    injector = fault_injector(settings) if faults is None else faults
    server = grpc.aio.server(
        # grpc.aio runs the first interceptor outermost: the span covers the whole call, and
        # the metrics see the status that the error interceptor, innermost, mapped errors to.
        interceptors=[
            *telemetry.server_interceptors(),
            metrics.RpcMetrics(),
            *interceptors,
            ErrorInterceptor(),
            # Inside the error mapping, so a refused token becomes its status code.
            *([authenticate] if authenticate else []),
            # Innermost: only admitted calls are faulted, and an injected error or a lost
            # reply is an abort the metrics count by its code.
            injector.interceptor(),
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # Without this a second server could bind the same port silently.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    for service in services:
        service.register(server)
    fault_injection.register(injector)(server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [s.name for s in services]
    reflection.enable_server_reflection(
        [
            *names,
            # Listed only where it works, so a production `grpcurl list` shows no test tool.
            *([fault_injection.SERVICE_NAME] if injector.control else []),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = f"{settings.host}:{settings.port}"
    try:
        tls = server_credentials(settings)
        port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    except RuntimeError as err:
        raise PortInUse(f"cannot listen on {address}: the port is in use or not allowed") from err
    if port == 0:
        raise PortInUse(f"cannot listen on {address}: the port is in use or not allowed")
    return server, port


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS for this server when it has a certificate; mutual when it names a client CA."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


def authenticator(
    settings: ServiceSettings, services: Sequence[Service], lookup: auth.TokenLookup
) -> auth.AuthInterceptor:
    """The access checks of a server: its services' tables, with the deployment's secrets."""
    policy = {method: access for s in services for method, access in s.access.items()}
    policy |= FAULT_ACCESS
    return auth.AuthInterceptor(
        auth.Authenticator(
            admin_token=settings.secret("admin_token"),
            service_credential=settings.secret("service_credential"),
            lookup=lookup,
        ),
        policy,
    )


async def set_status(health: HealthServicer, names: Sequence[str], serving: bool) -> None:
    """Report every service, and the server as a whole (""), as serving or not."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *names]:
        await health.set(name, status)


async def serve(
    settings: ServiceSettings, services: Sequence[Service], lifecycle: Lifecycle
) -> None:
    """Run a server until SIGTERM or SIGINT, then stop it within the grace period."""
    try:
        await _serve(settings, services, lifecycle)
    finally:
        # Last, so that the spans of stopping and of shutdown steps are exported too.
        telemetry.shutdown()


async def _serve(
    settings: ServiceSettings, services: Sequence[Service], lifecycle: Lifecycle
) -> None:
    health = HealthServicer()
    names = [s.name for s in services]
    if lifecycle.token_lookup is None:
        raise ValueError("a service must say how account tokens are checked (token_lookup)")
    server, port = create_server(
        settings,
        services,
        health=health,
        interceptors=lifecycle.extra_interceptors,
        authenticate=authenticator(settings, services, lifecycle.token_lookup),
    )
    try:
        metrics.serve(settings.metrics_port, settings.host)
    except OSError as err:
        address = f"{settings.host}:{settings.metrics_port}"
        raise PortInUse(f"cannot serve metrics on {address}: {err.strerror or err}") from err
    if settings.metrics_port:
        log.info("serving metrics", extra={"metrics_port": settings.metrics_port})
    await set_status(health, names, serving=False)
    await server.start()
    log.info("listening", extra={"port": port, "services": ",".join(names)})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tasks: list[asyncio.Task[None]] = []
    try:
        for step in lifecycle.startup:
            await step()
        tasks = [asyncio.create_task(job()) for job in lifecycle.background]
        _tune_gc()
        await set_status(health, names, serving=True)
        log.info("serving", extra={"port": port})
        waiter = asyncio.create_task(stop.wait())
        # A background job that dies takes the server down rather than leaving it half-working.
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                log.error("background job failed", exc_info=task.exception())
                raise SystemExit(1)
    finally:
        log.info("stopping", extra={"grace_seconds": settings.grace_seconds})
        await health.enter_graceful_shutdown()
        for step in lifecycle.stopping:
            await step()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await server.stop(settings.grace_seconds)
        for step in lifecycle.shutdown:
            await step()
        log.info("stopped")


# A request allocates thousands of short-lived objects (messages, spans, rows); with the
# default threshold of 700 the collector ran every few requests and walked everything
# alive each time. Measured under the bench: about 8 % of booking_svc's CPU.
GC_THRESHOLDS = (50_000, 50, 100)


def _tune_gc() -> None:
    """Set what the service made at start aside for good, and collect young objects seldom."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(settings: ServiceSettings, services: Sequence[Service], lifecycle: Lifecycle) -> None:
    """The body of every `python -m <service>`: serve, and exit with a message on a busy port."""
    try:
        asyncio.run(serve(settings, services, lifecycle))
    except PortInUse as err:
        raise SystemExit(str(err)) from None


S = TypeVar("S", bound=ServiceSettings)


def main(
    settings_class: type[S], server_parts: Callable[[S], tuple[Sequence[Service], Lifecycle]]
) -> None:
    """`python -m <service>`: load settings (exiting on a bad variable), logs, tracing; serve."""
    settings = load(settings_class)
    logs.configure(settings.log_level, settings.log_format)
    telemetry.setup(settings.service_name)
    run(settings, *server_parts(settings))
