"""Settings of the booking service, from BOOKING_SVC_* variables."""

from __future__ import annotations

import socket

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from booking_svc.domain.saga import DEFINITIONS
from booking_svc.service_layer import crash
from eventbooking.settings import DatabaseSettings


class Settings(DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_SVC_", frozen=True, extra="ignore")

    service_name: str = Field("booking_svc", min_length=1, description="service.name of its traces")
    port: int = 50053
    metrics_port: int = Field(9553, ge=0, le=65535, description="Prometheus port; 0 disables it")
    instance_id: str = Field(
        "",
        max_length=200,
        description=(
            "this process's name as a saga owner; a process restarted under the same name "
            "takes its sagas back at once (default: hostname:port)"
        ),
    )
    account_address: str = Field("localhost:50051", description="host:port of account_svc")
    event_address: str = Field("localhost:50052", description="host:port of event_svc")
    notification_address: str = Field(
        "localhost:50054", description="host:port of notification_svc"
    )
    lease_seconds: float = Field(
        10.0, gt=0, le=3600, description="how long a saga stays with a process that stops renewing"
    )
    recovery_interval_seconds: float = Field(
        1.0, gt=0, description="pause between two looks for sagas whose lease ran out"
    )
    max_running_sagas: int = Field(1000, ge=1, description="sagas one process runs at once")
    hold_seconds: int = Field(
        300, ge=1, le=3600, description="how long seats stay held while a booking is paid for"
    )
    step_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="calls a step before the pivot gets before the saga compensates",
    )
    step_deadline_seconds: float = Field(5.0, gt=0, description="deadline of each participant call")
    max_backoff_seconds: float = Field(10.0, gt=0, description="longest pause between two retries")
    give_up_after_seconds: float = Field(
        3600.0,
        gt=0,
        description="how long a step past the pivot or a compensation retries before STUCK",
    )
    max_wait_seconds: float = Field(
        30.0,
        gt=0,
        description="longest wait_for_outcome when the caller sets no deadline",
    )
    poll_interval_seconds: float = Field(
        0.5, gt=0, description="how often a waiter re-reads a booking another replica runs"
    )
    booking_attempts_per_second: int = Field(
        20,
        ge=1,
        le=100_000,
        description=(
            "CreateBooking calls one account may make per second in this process, "
            "in bursts of up to twice that"
        ),
    )
    crash_points: str = Field(
        "",
        description=(
            "comma-separated saga points where the process kills itself, for tests: "
            "<kind>.<step>.<action|compensation>.<before_call|after_call|after_log>"
        ),
    )

    @field_validator("crash_points")
    @classmethod
    def _known_points(cls, value: str) -> str:
        crash.parse(value, DEFINITIONS.values())
        return value

    @model_validator(mode="after")
    def _default_instance_id(self) -> Settings:
        if not self.instance_id:
            object.__setattr__(self, "instance_id", f"{socket.gethostname()}:{self.port}")
        return self
