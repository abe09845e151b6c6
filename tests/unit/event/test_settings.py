"""event_svc settings: where account_svc is, and the secrets it cannot start without."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from event_svc.bootstrap import server_parts
from event_svc.settings import Settings

pytestmark = pytest.mark.timeout(10)

ADMIN_TOKEN = "admin-" + "0" * 32
SERVICE_CREDENTIAL = "service-" + "1" * 32
URL = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EVENT_SVC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVENT_SVC_DATABASE_URL", URL)


def test_account_address_defaults_to_the_local_account_svc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENT_SVC_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("EVENT_SVC_SERVICE_CREDENTIAL", SERVICE_CREDENTIAL)
    assert Settings().account_address == "localhost:50051"
    monkeypatch.setenv("EVENT_SVC_ACCOUNT_ADDRESS", "accounts.internal:443")
    assert Settings().account_address == "accounts.internal:443"


@pytest.mark.parametrize("missing", ["admin_token", "service_credential"])
def test_each_secret_is_required(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    for name, value in (("admin_token", ADMIN_TOKEN), ("service_credential", SERVICE_CREDENTIAL)):
        if name != missing:
            monkeypatch.setenv(f"EVENT_SVC_{name.upper()}", value)
    with pytest.raises(ValidationError, match=f"set EVENT_SVC_{missing.upper()}_FILE"):
        Settings()


def test_secrets_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "admin").write_text(ADMIN_TOKEN + "\n")
    (tmp_path / "service").write_text(SERVICE_CREDENTIAL)
    monkeypatch.setenv("EVENT_SVC_ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("EVENT_SVC_SERVICE_CREDENTIAL_FILE", str(tmp_path / "service"))
    settings = Settings()
    assert settings.secret("admin_token") == ADMIN_TOKEN
    assert settings.secret("service_credential") == SERVICE_CREDENTIAL


def test_server_parts_need_no_running_loop_and_dial_nothing_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The account lookup's channel is made at its first call, inside the server's loop.
    monkeypatch.setenv("EVENT_SVC_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("EVENT_SVC_SERVICE_CREDENTIAL", SERVICE_CREDENTIAL)
    services, lifecycle = server_parts(Settings())
    assert [s.name for s in services] == ["eventbooking.event.v1.EventService"]
    assert lifecycle.token_lookup is not None
