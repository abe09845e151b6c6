"""Settings of the account service, from ACCOUNT_SVC_* variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from eventbooking.settings import DatabaseSettings


class Settings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCOUNT_SVC_", frozen=True, extra="ignore")

    port: int = 50051
