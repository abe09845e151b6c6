"""Typed settings read once from the environment, failing fast with the variable's name.

Each service has its own subclass with its own prefix (`ACCOUNT_SVC_PORT`,
`EVENT_SVC_DATABASE_URL`, ...). Handlers never read `os.environ`: the
composition root loads the settings and passes on what each piece needs.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


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


class DatabaseSettings(ServiceSettings):
    """A service that owns a PostgreSQL database."""

    database_url: str = Field(description="postgresql://user:password@host:port/database")
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    run_migrations: bool = Field(True, description="upgrade the schema before serving")


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
