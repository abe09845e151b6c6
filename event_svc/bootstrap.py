"""The composition root: engine, unit of work, handlers and server pieces from settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from event_svc.adapters.repository import SeatShortcuts, SqlSeatShortcuts
from event_svc.entrypoints.grpc_server import SERVICE_NAME, EventServicer
from event_svc.service_layer.handlers import EventHandlers
from event_svc.service_layer.sweeper import sweep_forever
from event_svc.service_layer.unit_of_work import SqlEventUnitOfWork, UnitOfWork
from event_svc.settings import Settings
from eventbooking import channels, db
from eventbooking.auth import Access
from eventbooking.clock import Clock, utcnow
from eventbooking.event.v1 import event_pb2_grpc
from eventbooking.server import Lifecycle, Service

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_event"

# Who may call what: any account may look at events; only booking_svc moves seats.
ACCESS: Mapping[str, Access] = {
    f"/{SERVICE_NAME}/{method}": access
    for method, access in {
        "CreateEvent": Access.ADMIN,
        "GetEvent": Access.USER,
        "ListEvents": Access.USER,
        "ReserveSeats": Access.SERVICE,
        "ConfirmReservation": Access.SERVICE,
        "ReleaseReservation": Access.SERVICE,
    }.items()
}


def bootstrap(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    uow: Callable[[], UnitOfWork] | None = None,
    shortcuts: SeatShortcuts | None = None,
    clock: Clock | None = None,
) -> EventHandlers:
    """Handlers wired to the database named in settings, or to the fakes given.

    With a unit of work given and no shortcuts, every seat move goes through it.
    """
    if uow is None:
        bound = engine or db.engine_for(settings)
        uow = lambda: SqlEventUnitOfWork(bound)  # noqa: E731
        shortcuts = shortcuts or SqlSeatShortcuts(bound)
    return EventHandlers(
        uow,
        clock=clock or utcnow,
        default_hold=timedelta(seconds=settings.default_hold_seconds),
        shortcuts=shortcuts,
    )


def grpc_service(handlers: EventHandlers) -> Service:
    """The EventService over `handlers`, with its access table."""
    servicer = EventServicer(handlers)
    return Service(
        SERVICE_NAME,
        lambda s: event_pb2_grpc.add_EventServiceServicer_to_server(servicer, s),
        access=ACCESS,
    )


def server_parts(settings: Settings) -> tuple[list[Service], Lifecycle]:
    """The servicers and lifecycle that `eventbooking.server.run` needs."""
    engine = db.engine_for(settings)
    handlers = bootstrap(settings, engine=engine)
    migrate = db.migration_step(settings, migrations=MIGRATIONS, version_table=VERSION_TABLE)
    return [grpc_service(handlers)], Lifecycle(
        startup=[migrate, db.warm_step(engine, settings.db_pool_size)],
        background=[
            lambda: sweep_forever(
                handlers,
                interval=settings.sweep_interval_seconds,
                batch_size=settings.sweep_batch_size,
            )
        ],
        shutdown=[engine.dispose],
        # account_svc knows the tokens; its channel is made at the first check, inside the loop.
        token_lookup=channels.account_token_lookup(settings.account_address, settings),
    )
