"""Settings of the account service, from ACCOUNT_SVC_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from eventbooking.settings import DatabaseSettings


class Settings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCOUNT_SVC_", frozen=True, extra="ignore")

    service_name: str = Field("account_svc", min_length=1, description="service.name of its traces")
    port: int = 50051
    metrics_port: int = Field(9551, ge=0, le=65535, description="Prometheus port; 0 disables it")
