"""The database engine, and schema migrations run under an advisory lock."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from eventbooking.settings import DatabaseSettings

log = logging.getLogger(__name__)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the database could not be reached, not that a statement was wrong."""
    # psycopg's own errors reach here from the paths that bypass SQLAlchemy (a saga's journal).
    return isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | psycopg.OperationalError
    ) or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)


def sqlalchemy_url(database_url: str, *, driver: str = "psycopg") -> str:
    """Turn a plain postgresql:// URL into one naming the psycopg driver."""
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            return f"postgresql+{driver}://" + database_url[len(scheme) :]
    raise ValueError("database_url must start with postgresql://")


def url_for(settings: DatabaseSettings) -> URL:
    """The URL of a service's database, with the password from its file when one is named.

    A URL object, not a string: SQLAlchemy masks its password whenever it is
    printed, so the password cannot reach a log line or an error message.
    """
    url = make_url(sqlalchemy_url(settings.database_url))
    password = settings.database_password()
    return url if password is None else url.set(password=password)


def _as_url(database_url: str | URL) -> str | URL:
    return database_url if isinstance(database_url, URL) else sqlalchemy_url(database_url)


def create_engine(
    database_url: str | URL, *, pool_size: int = 10, max_overflow: int = 10
) -> AsyncEngine:
    """An asyncio engine over psycopg 3 with a bounded pool."""
    return create_async_engine(
        _as_url(database_url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No ping on checkout: it cost a round trip per transaction. A restarted database
        # leaves dead connections in the pool; the first statement on one fails as an
        # outage (UNAVAILABLE, which callers retry), and SQLAlchemy then drops every
        # connection made before the failure, so one request per process sees it.
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def engine_for(settings: DatabaseSettings) -> AsyncEngine:
    """The engine a service's settings describe."""
    return create_engine(
        url_for(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


def warm_step(engine: AsyncEngine, size: int) -> Callable[[], Awaitable[None]]:
    """A startup step that opens `size` of the pool's connections at once and keeps them.

    Each new connection costs a SCRAM exchange and a backend fork; opened on
    demand they all come due in the first burst of requests, when the service
    is busiest. A database that cannot be reached yet only delays them to first use.
    """

    async def open_one() -> AsyncConnection:
        conn = engine.connect()
        await conn.start()
        return conn

    async def warm() -> None:
        opened = await asyncio.gather(*(open_one() for _ in range(size)), return_exceptions=True)
        # Closing gives each back to the pool, which keeps up to its size open.
        for conn in opened:
            if isinstance(conn, AsyncConnection):
                await conn.close()
        failed = [type(err).__name__ for err in opened if isinstance(err, BaseException)]
        if failed:
            log.warning(
                "some database connections could not be opened at start; they open on first use",
                extra={"failed": len(failed), "error": failed[0]},
            )

    return warm


def migration_step(
    settings: DatabaseSettings, *, migrations: Path, version_table: str
) -> Callable[[], Awaitable[None]]:
    """A startup step that upgrades the schema, unless the settings turn migrations off."""

    async def migrate() -> None:
        if settings.run_migrations:
            await asyncio.to_thread(
                upgrade, url_for(settings), migrations=migrations, version_table=version_table
            )

    return migrate


def upgrade(database_url: str | URL, *, migrations: Path, version_table: str) -> None:
    """Bring the schema to the newest revision; replicas starting together take turns."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    engine = sa.create_engine(_as_url(database_url), poolclass=sa.pool.NullPool)
    lock_id = zlib.crc32(version_table.encode())
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
        try:
            config.attributes["connection"] = conn
            config.attributes["version_table"] = version_table
            command.upgrade(config, "head")
            conn.commit()
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
            conn.commit()
    engine.dispose()
    log.info("schema is up to date", extra={"version_table": version_table})


def run_migrations_online(target_metadata: sa.MetaData) -> None:
    """The body of every service's alembic env.py: migrate on the connection given."""
    from alembic import context

    conn = context.config.attributes.get("connection")
    if conn is None:
        raise RuntimeError(
            "migrations run through eventbooking.db.upgrade, which passes a connection"
        )
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=context.config.attributes["version_table"],
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
