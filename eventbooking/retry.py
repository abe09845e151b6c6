"""The named retry policies, each defined once.

A gRPC call is retried only for transient codes; business codes are final.
Every policy sleeps with exponential backoff and jitter. Callers always pass
a deadline as well: a retry policy bounds how often, the deadline bounds how
long each try may take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import grpc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter
from tenacity.stop import stop_base

from eventbooking import db
from eventbooking.clock import Clock

# DESIGN "Retries and deadlines". ABORTED is not here: every participant uses it
# for "this key is dead", which no retry changes.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
TRANSIENT_CODE_NAMES = frozenset(code.name for code in TRANSIENT_CODES)

Sleep = Callable[[float], Awaitable[None]]
BeforeSleep = Callable[[RetryCallState], Awaitable[None]]
Stop = stop_base | Callable[[RetryCallState], bool]


def is_transient(exc: BaseException) -> bool:
    """True for an RPC error whose code says that the same call may succeed later.

    Besides grpc's own errors this accepts any error whose `code` attribute
    is a transient code's name, as callers that hide grpc raise.
    """
    if isinstance(exc, grpc.RpcError):
        return exc.code() in TRANSIENT_CODES
    return getattr(exc, "code", None) in TRANSIENT_CODE_NAMES


def deadline_passed(deadline: datetime, clock: Clock) -> Callable[[RetryCallState], bool]:
    """A stop that fires once `clock` reaches `deadline`.

    tenacity's own stop_after_delay reads the monotonic clock; this one reads
    the caller's, so a test that moves time moves the give-up time too.
    """
    return lambda _state: clock() >= deadline


def participant_calls(
    *, stop: Stop, max_backoff: float, before_sleep: BeforeSleep, sleep: Sleep = asyncio.sleep
) -> AsyncRetrying:
    """A saga step's calls: transient failures retried with capped backoff until `stop`."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=0.05, max=max_backoff, jitter=0.1),
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


def database_outages(
    *, until: datetime, clock: Clock, sleep: Sleep = asyncio.sleep
) -> AsyncRetrying:
    """A write retried while the database cannot be reached, until `clock` reaches `until`."""
    return AsyncRetrying(
        retry=retry_if_exception(db.is_outage),
        wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
        stop=deadline_passed(until, clock),
        sleep=sleep,
        reraise=True,
    )
