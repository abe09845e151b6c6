"""Settings of notification_svc, read from `NOTIFICATION_SVC_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import NoDecode, SettingsConfigDict

from eventbooking.settings import ServiceSettings

SinkName = Literal["log", "jsonl", "smtp"]
SINK_NAMES: tuple[str, ...] = get_args(SinkName)
_PREFIX = "NOTIFICATION_SVC_"


class Settings(ServiceSettings):
    """How notification_svc listens, where it delivers, and how much it remembers."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, frozen=True, extra="ignore")

    service_name: str = Field(
        "notification_svc", min_length=1, description="service.name of its traces"
    )
    port: int = Field(50054, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(9554, ge=0, le=65535, description="Prometheus port; 0 disables it")
    account_address: str = Field(
        "localhost:50051", description="host:port of account_svc, which checks users' tokens"
    )
    # NoDecode: the variable is a plain comma-separated list, not JSON.
    sinks: Annotated[tuple[SinkName, ...], NoDecode] = Field(
        ("log",), description="comma-separated sinks to deliver through: log, jsonl, smtp"
    )
    jsonl_path: Path | None = Field(None, description="file the jsonl sink appends to")
    smtp_host: str = Field("", description="mail server the smtp sink sends through")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = Field("eventbooking@localhost", min_length=3, description="From address")
    smtp_recipient_template: str = Field(
        "{account_id}@notifications.invalid",
        description="To address; {account_id} is replaced by the notification's account id",
    )
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    dedupe_window_seconds: float = Field(86400.0, gt=0, description="how long a key is remembered")
    dedupe_max_keys: int = Field(100_000, ge=1, description="most keys remembered at once")
    history_size: int = Field(10_000, ge=1, description="notifications kept for listing")
    stream_queue_size: int = Field(
        1000, ge=1, description="notifications a stream may lag behind before it is dropped"
    )

    @field_validator("sinks", mode="before")
    @classmethod
    def _split_sinks(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        if not names:
            raise ValueError(f"name at least one sink: {', '.join(SINK_NAMES)}")
        unknown = [name for name in names if name not in SINK_NAMES]
        if unknown:
            raise ValueError(f"unknown sink {unknown[0]!r}; choose from {', '.join(SINK_NAMES)}")
        return tuple(dict.fromkeys(names))

    @field_validator("smtp_recipient_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        try:
            value.format(account_id="00000000-0000-0000-0000-000000000000")
        except (KeyError, IndexError, ValueError):
            raise ValueError("the only placeholder allowed is {account_id}") from None
        return value

    @model_validator(mode="after")
    def _check_sink_settings(self) -> Settings:
        problems: list[InitErrorDetails] = []
        if "jsonl" in self.sinks and self.jsonl_path is None:
            problems.append(_missing("jsonl_path", f"required when {_PREFIX}SINKS includes jsonl"))
        if "smtp" in self.sinks and not self.smtp_host:
            problems.append(_missing("smtp_host", f"required when {_PREFIX}SINKS includes smtp"))
        if problems:
            # Located on the fields, so that `eventbooking.settings.load` names their variables.
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


def _missing(field: str, message: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("missing_for_sink", message), loc=(field,), input=None
    )
