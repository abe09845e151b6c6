"""The named retry policies, each defined once.

A gRPC call is retried only for transient codes; business codes are final.
Every policy sleeps with exponential backoff and jitter and logs before it
sleeps. Callers always pass a deadline as well: a retry policy bounds how
often, the deadline bounds how long each try may take.
"""

from __future__ import annotations

import logging

import grpc
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for an RPC error whose code says that the same call may succeed later."""
    return isinstance(exc, grpc.RpcError) and exc.code() in TRANSIENT_CODES


def budgeted(*, attempts: int = 5, max_wait: float = 2.0) -> AsyncRetrying:
    """Steps before a saga's pivot: a few tries, then the caller gives up and compensates."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.05, max=max_wait),
        stop=stop_after_attempt(attempts),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


def persistent(*, give_up_after: float = 3600.0, max_wait: float = 10.0) -> AsyncRetrying:
    """Steps after the pivot and compensations: retry with capped backoff until a long limit."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.1, max=max_wait),
        stop=stop_after_delay(give_up_after),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
