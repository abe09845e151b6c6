"""Settings of the event service, from EVENT_SVC_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eventbooking.settings import DatabaseSettings


class Settings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENT_SVC_", frozen=True, extra="ignore")

    port: int = 50052
    default_hold_seconds: int = Field(
        300, ge=1, le=3600, description="how long seats stay held when a request names no time"
    )
    sweep_interval_seconds: float = Field(
        1.0, gt=0, description="pause between two sweeps of lapsed holds"
    )
    sweep_batch_size: int = Field(500, ge=1, description="lapsed holds expired per transaction")
