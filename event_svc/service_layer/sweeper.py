"""The background job that expires lapsed holds and gives their seats back.

Several replicas may sweep the same database: each batch locks its rows with
SKIP LOCKED, so sweepers share the work instead of waiting on each other.
"""

from __future__ import annotations

import asyncio
import logging

from event_svc.service_layer.handlers import EventHandlers

log = logging.getLogger(__name__)


async def sweep_forever(handlers: EventHandlers, *, interval: float, batch_size: int) -> None:
    """Expire lapsed holds every `interval` seconds until cancelled; failures are logged."""
    failures = 0
    while True:
        try:
            await sweep_once(handlers, batch_size=batch_size)
        except Exception as exc:
            failures += 1
            # A database restart must not end the sweeper, nor fill the log with tracebacks.
            log.warning(
                "sweeping lapsed holds failed; retrying next round",
                exc_info=failures == 1,
                extra={"error": type(exc).__name__, "failures": failures},
            )
        else:
            if failures:
                log.info("sweeping lapsed holds works again", extra={"failures": failures})
            failures = 0
        await asyncio.sleep(interval)


async def sweep_once(handlers: EventHandlers, *, batch_size: int) -> int:
    """Expire every lapsed hold, a batch per transaction; returns how many were expired."""
    total = 0
    # A full batch means more may be waiting.
    while (expired := await handlers.expire_lapsed(limit=batch_size)) > 0:
        total += expired
        if expired < batch_size:
            break
    if total:
        log.info("expired lapsed holds", extra={"count": total})
    return total
