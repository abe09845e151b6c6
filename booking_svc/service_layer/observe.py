"""What the saga engine tells operators: spans per saga and step, and Prometheus metrics.

Spans follow the trace of the request that started a saga, whose W3C context
is stored with the saga, so a saga resumed by another process after a crash
still lands in the same trace, with a link to the run it interrupted.
"""

from __future__ import annotations

from functools import cache

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags
from prometheus_client import Counter, Gauge, Histogram

tracer = trace.get_tracer("booking_svc.saga")

SAGAS_STARTED = Counter("booking_sagas_started_total", "Sagas this process started.", ["kind"])
SAGAS_FINISHED = Counter(
    "booking_sagas_finished_total",
    "Sagas this process brought to COMPLETED or COMPENSATED, or parked STUCK.",
    ["kind", "status"],
)
STEP_DURATION = Histogram(
    "booking_saga_step_duration_seconds",
    "Time a step's call took, retries included.",
    ["kind", "step", "phase"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@cache
def step_duration(kind: str, step: str, phase: str) -> Histogram:
    """STEP_DURATION of one step and phase: `labels` looks it up under a lock every time."""
    return STEP_DURATION.labels(kind, step, phase)


RETRIES = Counter(
    "booking_saga_retries_total", "Step calls retried after a transient failure.", ["step", "code"]
)
OLDEST_RUNNING = Gauge(
    "booking_oldest_running_saga_age_seconds",
    "Age of the oldest saga still RUNNING or COMPENSATING in the database (0 when none).",
)


def link_to(trace_id: str | None, span_id: str | None) -> list[Link]:
    """A link to the span that wrote a saga's last row before it was interrupted."""
    if not trace_id or not span_id:
        return []
    try:
        context = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except ValueError:
        return []
    return [Link(context)] if context.is_valid else []
