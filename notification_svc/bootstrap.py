"""The composition root of notification_svc: sinks, dedupe window and history from settings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from eventbooking import channels
from eventbooking.clock import Clock, utcnow
from eventbooking.server import Lifecycle, Service
from notification_svc.adapters.sinks import JsonlSink, LogSink, Sink, SmtpSink
from notification_svc.domain.dedupe import DedupeWindow
from notification_svc.domain.history import History
from notification_svc.entrypoints.grpc_server import grpc_service
from notification_svc.service_layer.handlers import NotificationService
from notification_svc.settings import Settings


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks named in `settings.sinks`, in that order."""
    sinks: list[Sink] = []
    for name in settings.sinks:
        if name == "log":
            sinks.append(LogSink())
        elif name == "jsonl":
            assert settings.jsonl_path is not None, "Settings requires jsonl_path with jsonl"
            sinks.append(JsonlSink(settings.jsonl_path))
        elif name == "smtp":
            sinks.append(
                SmtpSink(
                    settings.smtp_host,
                    settings.smtp_port,
                    sender=settings.smtp_sender,
                    recipient_template=settings.smtp_recipient_template,
                    timeout_seconds=settings.smtp_timeout_seconds,
                )
            )
    return sinks


def bootstrap(
    settings: Settings, *, sinks: Sequence[Sink] | None = None, clock: Clock | None = None
) -> NotificationService:
    """The wired service; tests pass fake `sinks` and a `clock` they control."""
    return NotificationService(
        build_sinks(settings) if sinks is None else sinks,
        dedupe=DedupeWindow(
            timedelta(seconds=settings.dedupe_window_seconds), max_keys=settings.dedupe_max_keys
        ),
        history=History(settings.history_size),
        stream_queue_size=settings.stream_queue_size,
        clock=clock or utcnow,
    )


def server_parts(
    settings: Settings, *, sinks: Sequence[Sink] | None = None, clock: Clock | None = None
) -> tuple[list[Service], Lifecycle]:
    """What `eventbooking.server.run` needs: the servicers and what runs beside them."""
    service = bootstrap(settings, sinks=sinks, clock=clock)

    async def close_streams() -> None:
        # Open streams would otherwise hold the server for its whole grace period.
        service.close_streams()

    return [grpc_service(service)], Lifecycle(
        stopping=[close_streams],
        token_lookup=channels.account_token_lookup(settings.account_address, settings),
    )
