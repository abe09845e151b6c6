"""A service opens its pool's connections at start, and starts anyway without a database."""

from __future__ import annotations

import logging

import pytest

from eventbooking import db
from eventbooking.localpg import LocalPostgres, free_port


async def test_warming_leaves_the_pool_holding_its_connections(postgres: LocalPostgres) -> None:
    engine = db.create_engine(postgres.url(), pool_size=3, max_overflow=0)
    try:
        await db.warm_step(engine, 3)()

        pool = engine.sync_engine.pool
        assert (pool.checkedin(), pool.checkedout()) == (3, 0)  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            assert pool.checkedin() == 2  # type: ignore[attr-defined]
            await conn.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()


async def test_without_a_database_warming_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    engine = db.create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none", pool_size=2)
    try:
        with caplog.at_level(logging.WARNING, logger="eventbooking.db"):
            await db.warm_step(engine, 2)()

        assert "open on first use" in caplog.text
        assert engine.sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
