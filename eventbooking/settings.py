"""Typed settings read once from the environment, failing fast with the variable's name.

Each service has its own subclass with its own prefix (`ACCOUNT_SVC_PORT`,
`EVENT_SVC_DATABASE_URL`, ...). Handlers never read `os.environ`: the
composition root loads the settings and passes on what each piece needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbooking import fault_injection


class ServiceSettings(BaseSettings):
    """What every gRPC server needs; services add their own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    service_name: str = Field(
        min_length=1,
        description="service.name of its traces, unless OTEL_SERVICE_NAME names another",
    )
    host: str = Field("0.0.0.0", description="interface to listen on")
    port: int = Field(ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the Prometheus /metrics endpoint; 0 disables it"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    grace_seconds: float = Field(5.0, ge=0, description="time in-flight calls get on SIGTERM")
    max_message_bytes: int = Field(1024 * 1024, ge=1024, description="largest request accepted")
    max_concurrent_rpcs: int = Field(1000, ge=1)

    # Secrets: each from its variable or, better, from a file only the service can read.
    admin_token: SecretStr | None = Field(None, description="the operators' bearer token")
    admin_token_file: Path | None = Field(None, description="file holding the admin token")
    service_credential: SecretStr | None = Field(
        None, description="the bearer credential services use on participant RPCs"
    )
    service_credential_file: Path | None = Field(
        None, description="file holding the service credential"
    )
    # TLS: a certificate and key make the server speak TLS; a client CA makes it mutual.
    tls_cert_file: Path | None = Field(None, description="PEM certificate this server presents")
    tls_key_file: Path | None = Field(None, description="PEM private key of that certificate")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA whose client certificates this server requires (mutual TLS)"
    )
    tls_ca_file: Path | None = Field(
        None, description="PEM CA this service's clients verify other servers against"
    )
    # Fault injection, for tests only; see eventbooking.fault_injection.
    faults: str | None = Field(
        None, description='fault rules as JSON: {"seed": 1, "rules": [{"service": ...}]}'
    )
    faults_file: Path | None = Field(None, description="file holding the fault rules as JSON")
    fault_control: bool = Field(
        False, description="let the admin change fault rules at runtime through FaultService"
    )

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, value: str | None) -> str | None:
        if value is not None:
            fault_injection.loads(value)
        return value

    @field_validator("faults_file")
    @classmethod
    def _check_faults_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            fault_injection.load_file(value)
        return value

    @model_validator(mode="after")
    def _secrets_present(self) -> Self:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        for name in ("admin_token", "service_credential"):
            variable = f"{prefix}{name.upper()}"
            if getattr(self, name) is None and getattr(self, f"{name}_file") is None:
                raise ValueError(
                    f"set {variable}_FILE (preferred) or {variable}; there is no default"
                )
            try:
                self.secret(name)
            except OSError as err:
                raise ValueError(f"{variable}_FILE cannot be read: {err.strerror}") from None
            except ValueError:
                raise ValueError(f"{variable} must be at least 16 characters") from None
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        if self.faults is not None and self.faults_file is not None:
            raise ValueError(f"set {prefix}FAULTS or {prefix}FAULTS_FILE, not both")
        return self

    def fault_plan(self) -> fault_injection.Plan:
        """The fault rules to start with: from `faults` or `faults_file`, or none."""
        return fault_injection.plan_from(self.faults, self.faults_file)

    def secret(self, name: str) -> str:
        """The admin token or service credential, from its file if one is named."""
        path: Path | None = getattr(self, f"{name}_file")
        if path is not None:
            value = path.read_text().strip()
        else:
            direct: SecretStr | None = getattr(self, name)
            value = direct.get_secret_value().strip() if direct else ""
        if len(value) < 16:
            raise ValueError(f"{name} must be at least 16 characters")
        return value


class DatabaseSettings(ServiceSettings):
    """A service that owns a PostgreSQL database.

    The password may come from `database_password_file` instead of the URL,
    so that a deployment keeps it out of the environment; it is read when
    the engine is built and never kept on the settings object.
    """

    database_url: str = Field(description="postgresql://user[:password]@host:port/database")
    database_password_file: Path | None = Field(
        None, description="file holding the database password; replaces any password in the URL"
    )
    # Connections kept open. Overflow ones are closed as soon as they are returned, so
    # under steady load they cost a connect (and a backend fork) each; keep it small.
    db_pool_size: int = Field(20, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    run_migrations: bool = Field(True, description="upgrade the schema before serving")

    @model_validator(mode="after")
    def _password_readable(self) -> Self:
        if self.database_password_file is not None:
            prefix = str(self.model_config.get("env_prefix", "")).upper()
            variable = f"{prefix}DATABASE_PASSWORD_FILE"
            try:
                self.database_password()
            except OSError as err:
                raise ValueError(f"{variable} cannot be read: {err.strerror}") from None
            except ValueError:
                raise ValueError(f"{variable} names an empty file") from None
        return self

    def database_password(self) -> str | None:
        """The password from `database_password_file`, or None to use the URL's own."""
        if self.database_password_file is None:
            return None
        # Trailing newlines only, as PostgreSQL's image reads POSTGRES_PASSWORD_FILE.
        value = self.database_password_file.read_text().rstrip("\n")
        if not value:
            raise ValueError("the database password file is empty")
        return value


S = TypeVar("S", bound=BaseSettings)


def load(settings_class: type[S]) -> S:
    """Read `settings_class` from the environment or exit naming each bad variable."""
    try:
        return settings_class()
    except ValidationError as err:
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        lines = []
        for problem in err.errors():
            field = ".".join(str(part) for part in problem["loc"])
            name = f"{prefix}{field.upper()}" if field else settings_class.__name__
            lines.append(f"  {name}: {problem['msg']}")
        sys.exit(f"invalid settings for {settings_class.__name__}:\n" + "\n".join(lines))
