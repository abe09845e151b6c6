"""The composition root: database, participants, engine, handlers and server pieces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from booking_svc.adapters import journal as pg_journal
from booking_svc.adapters.participants import GrpcParticipants, Participants
from booking_svc.domain.saga import RetryPolicy, SagaDefinition, booking_saga, cancel_saga
from booking_svc.entrypoints.grpc_server import grpc_services
from booking_svc.service_layer import crash
from booking_svc.service_layer.changes import BookingChanges
from booking_svc.service_layer.engine import SagaEngine
from booking_svc.service_layer.handlers import BookingHandlers
from booking_svc.service_layer.limits import BookingRateLimit
from booking_svc.service_layer.unit_of_work import Journal, SqlBookingUnitOfWork, UnitOfWork
from booking_svc.settings import Settings
from eventbooking import channels, db
from eventbooking.clock import Clock, utcnow
from eventbooking.retry import Sleep
from eventbooking.server import Lifecycle, Service

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_booking"


def definitions(settings: Settings) -> dict[str, SagaDefinition]:
    """The booking and cancel sagas with the retry policies the settings ask for."""
    before_pivot = RetryPolicy.budgeted(
        attempts=settings.step_attempts,
        deadline_seconds=settings.step_deadline_seconds,
        max_backoff_seconds=settings.max_backoff_seconds,
    )
    after_pivot = RetryPolicy.persistent(
        give_up_after_seconds=settings.give_up_after_seconds,
        deadline_seconds=settings.step_deadline_seconds,
        max_backoff_seconds=settings.max_backoff_seconds,
    )
    sagas = [
        booking_saga(before_pivot=before_pivot, after_pivot=after_pivot),
        cancel_saga(policy=after_pivot),
    ]
    return {saga.kind: saga for saga in sagas}


def participants_for(settings: Settings) -> GrpcParticipants:
    """The participants over gRPC, with this deployment's TLS files and service credential."""
    return GrpcParticipants(
        settings,
        account_address=settings.account_address,
        event_address=settings.event_address,
        notification_address=settings.notification_address,
    )


@dataclass(frozen=True)
class App:
    """The booking service's working parts, as one process runs them."""

    handlers: BookingHandlers
    engine: SagaEngine


def bootstrap(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    uow: Callable[[], UnitOfWork] | None = None,
    participants: Participants | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    crash_hook: crash.Crash | None = None,
    rate_limit: BookingRateLimit | None = None,
    journal: Journal | None = None,
) -> App:
    """Handlers and saga engine wired to what the settings name, or to the fakes given."""
    if uow is None:
        bound = engine or db.engine_for(settings)
        uow = lambda: SqlBookingUnitOfWork(bound)  # noqa: E731
    if participants is None:
        participants = participants_for(settings)
    sagas = definitions(settings)
    if crash_hook is None:
        crash_hook = crash.exit_at(crash.parse(settings.crash_points, sagas.values()))
    changes = BookingChanges()
    clock = clock or utcnow
    saga_engine = SagaEngine(
        uow,
        participants,
        owner=settings.instance_id,
        clock=clock,
        lease=timedelta(seconds=settings.lease_seconds),
        hold_seconds=settings.hold_seconds,
        changes=changes,
        definitions=sagas,
        crash=crash_hook,
        max_running=settings.max_running_sagas,
        sleep=sleep or asyncio.sleep,
        journal=journal,
    )
    handlers = BookingHandlers(
        uow,
        saga_engine,
        changes,
        clock=clock,
        rate_limit=rate_limit or BookingRateLimit(settings.booking_attempts_per_second),
        poll_interval=settings.poll_interval_seconds,
    )
    return App(handlers=handlers, engine=saga_engine)


def server_parts(settings: Settings) -> tuple[list[Service], Lifecycle]:
    """The servicers and lifecycle that `eventbooking.server.run` needs."""
    engine = db.engine_for(settings)
    # The saga's hot path writes through its own pool of plain psycopg connections.
    journal_pool = pg_journal.pool(
        db.url_for(settings), max_size=settings.db_pool_size + settings.db_max_overflow
    )
    participants = participants_for(settings)
    app = bootstrap(
        settings,
        engine=engine,
        participants=participants,
        journal=pg_journal.PgJournal(journal_pool),
    )
    services = grpc_services(app.handlers, max_wait_seconds=settings.max_wait_seconds)
    migrate = db.migration_step(settings, migrations=MIGRATIONS, version_table=VERSION_TABLE)
    return services, Lifecycle(
        startup=[migrate, journal_pool.open, db.warm_step(engine, settings.db_pool_size)],
        background=[
            lambda: app.engine.recover_forever(interval=settings.recovery_interval_seconds),
            app.engine.heartbeat_forever,
        ],
        stopping=[app.engine.stop],
        shutdown=[participants.close, journal_pool.close, engine.dispose],
        token_lookup=channels.account_token_lookup(settings.account_address, settings),
    )
