"""notification_svc settings: the sink list, the settings each sink requires, the secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from notification_svc.settings import Settings

pytestmark = pytest.mark.timeout(10)


ADMIN_TOKEN = "test-admin-token-0123456789"
SERVICE_CREDENTIAL = "test-service-credential-0123456789"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NOTIFICATION_SVC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NOTIFICATION_SVC_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("NOTIFICATION_SVC_SERVICE_CREDENTIAL", SERVICE_CREDENTIAL)


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 50054
    assert settings.account_address == "localhost:50051"
    assert settings.sinks == ("log",)
    assert (settings.dedupe_window_seconds, settings.dedupe_max_keys) == (86400, 100_000)
    assert (settings.history_size, settings.stream_queue_size, settings.smtp_port) == (
        10_000,
        1000,
        25,
    )


def test_sinks_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFICATION_SVC_SINKS", " log, JSONL ,log,smtp")
    monkeypatch.setenv("NOTIFICATION_SVC_JSONL_PATH", str(tmp_path / "n.jsonl"))
    monkeypatch.setenv("NOTIFICATION_SVC_SMTP_HOST", "mail.internal")
    settings = Settings()
    assert settings.sinks == ("log", "jsonl", "smtp")
    assert settings.jsonl_path == tmp_path / "n.jsonl"


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        ({"NOTIFICATION_SVC_SINKS": "log,pigeon"}, "sinks", "unknown sink 'pigeon'"),
        ({"NOTIFICATION_SVC_SINKS": " , "}, "sinks", "name at least one sink"),
        (
            {"NOTIFICATION_SVC_SINKS": "jsonl"},
            "jsonl_path",
            "required when NOTIFICATION_SVC_SINKS includes jsonl",
        ),
        (
            {"NOTIFICATION_SVC_SINKS": "smtp"},
            "smtp_host",
            "required when NOTIFICATION_SVC_SINKS includes smtp",
        ),
        (
            {"NOTIFICATION_SVC_SMTP_RECIPIENT_TEMPLATE": "{user}@example.com"},
            "smtp_recipient_template",
            "only placeholder allowed",
        ),
        ({"NOTIFICATION_SVC_STREAM_QUEUE_SIZE": "0"}, "stream_queue_size", "greater than"),
    ],
)
def test_a_bad_setting_names_its_field(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    [error] = caught.value.errors()
    assert error["loc"][0] == field
    assert message in error["msg"]


def test_every_missing_sink_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_SVC_SINKS", "jsonl,smtp")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [error["loc"] for error in caught.value.errors()] == [("jsonl_path",), ("smtp_host",)]


def test_the_secrets_come_from_the_environment_or_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings().secret("admin_token") == ADMIN_TOKEN
    (tmp_path / "credential").write_text("from-a-file-0123456789\n")
    monkeypatch.delenv("NOTIFICATION_SVC_SERVICE_CREDENTIAL")
    monkeypatch.setenv("NOTIFICATION_SVC_SERVICE_CREDENTIAL_FILE", str(tmp_path / "credential"))
    assert Settings().secret("service_credential") == "from-a-file-0123456789"


@pytest.mark.parametrize("secret", ["ADMIN_TOKEN", "SERVICE_CREDENTIAL"])
def test_a_missing_secret_is_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.delenv(f"NOTIFICATION_SVC_{secret}")
    with pytest.raises(ValidationError, match="there is no default"):
        Settings()
