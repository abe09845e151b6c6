"""<PREFIX>DATABASE_PASSWORD_FILE: the password from a file, and never in a log or an error."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from account_svc.bootstrap import MIGRATIONS, VERSION_TABLE
from account_svc.settings import Settings
from eventbooking import db
from eventbooking.localpg import LocalPostgres, free_port


@pytest.fixture
def token_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("admin_token_file", "service_credential_file"):
        files[name] = tmp_path / name
        files[name].write_text(secrets.token_urlsafe(32))
    return files


def settings_of(token_files: dict[str, Path], **values: object) -> Settings:
    """account_svc's settings from these values alone, whatever the environment holds."""
    return Settings.model_validate({**token_files, **values})


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "db_password"
    path.write_text(password + "\n")
    return path


def test_the_file_supplies_the_password(tmp_path: Path, token_files: dict[str, Path]) -> None:
    # Characters that a URL would need quoted: the file takes them as they are.
    password = "p@ss:w/rd?" + secrets.token_urlsafe(16)
    settings = settings_of(
        token_files,
        database_url="postgresql://account@account-db:5432/account",
        database_password_file=password_file(tmp_path, password),
    )
    url = db.url_for(settings)
    assert url.password == password
    assert (url.username, url.host, url.port, url.database) == (
        "account",
        "account-db",
        5432,
        "account",
    )
    assert url.drivername == "postgresql+psycopg"
    for shown in (str(url), repr(url), repr(settings), str(settings)):
        assert password not in shown
        assert quote(password, safe="") not in shown


def test_the_file_replaces_a_password_in_the_url(
    tmp_path: Path, token_files: dict[str, Path]
) -> None:
    settings = settings_of(
        token_files,
        database_url="postgresql://account:old-password@db/account",
        database_password_file=password_file(tmp_path, "new-password"),
    )
    assert db.url_for(settings).password == "new-password"


def test_without_a_file_the_url_is_used_as_it_is(token_files: dict[str, Path]) -> None:
    settings = settings_of(token_files, database_url="postgresql://account:pw@db/account")
    assert settings.database_password() is None
    assert db.url_for(settings).password == "pw"


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot be read"), ("\n", "empty")])
def test_an_unusable_file_is_refused_naming_the_variable(
    tmp_path: Path, token_files: dict[str, Path], content: str | None, problem: str
) -> None:
    path = tmp_path / "db_password"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValidationError) as refused:
        settings_of(
            token_files,
            database_url="postgresql://account@db/account",
            database_password_file=path,
        )
    assert "ACCOUNT_SVC_DATABASE_PASSWORD_FILE" in str(refused.value)
    assert problem in str(refused.value)


async def test_a_failed_connection_does_not_show_the_password(
    tmp_path: Path, token_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    password = secrets.token_urlsafe(24)
    settings = settings_of(
        token_files,
        database_url=f"postgresql://account@127.0.0.1:{free_port()}/account",
        database_password_file=password_file(tmp_path, password),
    )
    engine = db.engine_for(settings)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(sa_exc.OperationalError) as failed:
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    assert password not in str(failed.value)
    assert password not in repr(failed.value)
    assert password not in caplog.text

    migrate = db.migration_step(settings, migrations=MIGRATIONS, version_table=VERSION_TABLE)
    with pytest.raises(sa_exc.OperationalError) as failed:
        await migrate()
    assert password not in str(failed.value)
    assert password not in caplog.text


@pytest.mark.integration
async def test_migrations_and_queries_authenticate_with_the_file(
    postgres: LocalPostgres, token_files: dict[str, Path]
) -> None:
    url = postgres.create_database(f"pwfile_{secrets.token_hex(4)}")
    settings = settings_of(
        token_files,
        # The URL without its password, as docker-compose.yml and deploy/k8s/ pass it.
        database_url=url.replace(f":{quote(postgres.password, safe='')}@", "@"),
        database_password_file=postgres.password_file,
    )
    assert postgres.password not in settings.database_url
    await db.migration_step(settings, migrations=MIGRATIONS, version_table=VERSION_TABLE)()
    engine = db.engine_for(settings)
    try:
        async with engine.connect() as conn:
            version = await conn.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
    finally:
        await engine.dispose()
    assert version
