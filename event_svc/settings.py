"""Settings of the event service, from EVENT_SVC_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eventbooking.settings import DatabaseSettings


class Settings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENT_SVC_", frozen=True, extra="ignore")

    service_name: str = Field("event_svc", min_length=1, description="service.name of its traces")
    port: int = 50052
    metrics_port: int = Field(9552, ge=0, le=65535, description="Prometheus port; 0 disables it")
    account_address: str = Field(
        "localhost:50051", min_length=1, description="host:port of account_svc, which checks tokens"
    )
    default_hold_seconds: int = Field(
        300, ge=1, le=3600, description="how long seats stay held when a request names no time"
    )
    sweep_interval_seconds: float = Field(
        1.0, gt=0, description="pause between two sweeps of lapsed holds"
    )
    sweep_batch_size: int = Field(500, ge=1, description="lapsed holds expired per transaction")
