"""The composition root: engine, unit of work, handlers and server pieces from settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from account_svc.entrypoints.grpc_server import SERVICE_NAME, AccountServicer
from account_svc.service_layer.handlers import AccountHandlers
from account_svc.service_layer.unit_of_work import SqlAccountUnitOfWork, UnitOfWork
from account_svc.settings import Settings
from eventbooking import db
from eventbooking.account.v1 import account_pb2_grpc
from eventbooking.auth import Access
from eventbooking.clock import Clock, utcnow
from eventbooking.server import Lifecycle, Service

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_account"

# Who may call what (USER methods also check, in the servicer, that the account is the caller's).
ACCESS: Mapping[str, Access] = {
    f"/{SERVICE_NAME}/{method}": access
    for method, access in {
        "CreateAccount": Access.PUBLIC,
        "GetAccount": Access.USER,
        "Deposit": Access.USER,
        "ListTransactions": Access.USER,
        "RotateToken": Access.USER,
        "Charge": Access.SERVICE,
        "Refund": Access.SERVICE,
        "AuthenticateToken": Access.SERVICE,
        "ListAccounts": Access.ADMIN,
    }.items()
}


def bootstrap(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    uow: Callable[[], UnitOfWork] | None = None,
    clock: Clock | None = None,
) -> AccountHandlers:
    """Handlers wired to the database named in settings, or to the fakes given."""
    if uow is None:
        bound = engine or db.engine_for(settings)
        uow = lambda: SqlAccountUnitOfWork(bound)  # noqa: E731
    return AccountHandlers(uow, clock=clock or utcnow)


def grpc_service(handlers: AccountHandlers) -> Service:
    """The AccountService over `handlers`, with its access table."""
    servicer = AccountServicer(handlers)
    return Service(
        SERVICE_NAME,
        lambda s: account_pb2_grpc.add_AccountServiceServicer_to_server(servicer, s),
        access=ACCESS,
    )


def server_parts(settings: Settings) -> tuple[list[Service], Lifecycle]:
    """The servicers and lifecycle that `eventbooking.server.run` needs."""
    engine = db.engine_for(settings)
    handlers = bootstrap(settings, engine=engine)
    migrate = db.migration_step(settings, migrations=MIGRATIONS, version_table=VERSION_TABLE)
    return [grpc_service(handlers)], Lifecycle(
        startup=[migrate, db.warm_step(engine, settings.db_pool_size)],
        shutdown=[engine.dispose],
        # Tokens are checked against this service's own table, uncached: a rotation counts at once.
        token_lookup=handlers.authenticate,
    )
