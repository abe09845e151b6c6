"""account_svc settings: the secrets it cannot start without, and its local token lookup."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from account_svc.bootstrap import server_parts
from account_svc.settings import Settings

pytestmark = pytest.mark.timeout(10)

ADMIN_TOKEN = "admin-" + "0" * 32
SERVICE_CREDENTIAL = "service-" + "1" * 32


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ACCOUNT_SVC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ACCOUNT_SVC_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")


@pytest.mark.parametrize("missing", ["admin_token", "service_credential"])
def test_each_secret_is_required(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    for name, value in (("admin_token", ADMIN_TOKEN), ("service_credential", SERVICE_CREDENTIAL)):
        if name != missing:
            monkeypatch.setenv(f"ACCOUNT_SVC_{name.upper()}", value)
    with pytest.raises(ValidationError, match=f"set ACCOUNT_SVC_{missing.upper()}_FILE"):
        Settings()


def test_server_parts_check_tokens_with_the_handlers_own_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACCOUNT_SVC_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("ACCOUNT_SVC_SERVICE_CREDENTIAL", SERVICE_CREDENTIAL)
    services, lifecycle = server_parts(Settings())
    assert [s.name for s in services] == ["eventbooking.account.v1.AccountService"]
    assert lifecycle.token_lookup is not None
