"""The saga's spans and metrics: a span per saga run and per step call, in the starting trace.

A local tracer provider with an in-memory exporter stands in for the one
`eventbooking.telemetry` configures, so these tests need no global setup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from booking_svc.domain.states import SagaStatus, StepPhase
from booking_svc.service_layer import crash, observe
from tests.unit.booking.fakes import CrashAt, World, refused, transient

STEPS = ["step reserve_seats", "step charge_account", "step confirm_seats", "step notify"]


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(observe, "tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    made = World()
    yield made
    await made.close()


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_booking_is_one_saga_span_with_a_child_span_per_step(
    world: World, spans: InMemorySpanExporter
) -> None:
    request = observe.tracer.start_span("CreateBooking")
    with trace.use_span(request, end_on_exit=True):
        booking = await world.book()
    await world.settle()

    (saga,) = named(spans, "saga booking")
    steps = [s for s in spans.get_finished_spans() if s.name.startswith("step ")]
    assert [s.name for s in sorted(steps, key=lambda s: s.start_time or 0)] == STEPS
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in [saga, *steps]} == {trace_id}
    assert saga.parent is not None
    assert saga.parent.span_id == request.get_span_context().span_id
    assert {s.parent.span_id for s in steps if s.parent} == {saga.context.span_id}
    assert saga.attributes is not None
    assert saga.attributes["booking.id"] == str(booking.booking_id)
    assert saga.attributes["saga.status"] == "COMPLETED"
    assert saga.attributes["saga.resumed"] is False
    charge = named(spans, "step charge_account")[0]
    assert charge.attributes is not None
    assert charge.attributes["saga.outcome"] == "succeeded"
    assert charge.attributes["saga.attempt"] == 1
    # The log rows name the spans that wrote them.
    rows = world.log(world.saga(booking.booking_id).saga_id)
    assert {r.trace_id for r in rows} == {format(trace_id, "032x")}
    assert format(charge.context.span_id, "016x") in {r.span_id for r in rows}


async def test_retries_are_span_events_and_counted(
    world: World, spans: InMemorySpanExporter
) -> None:
    before = sample("booking_saga_retries_total", step="charge_account", code="UNAVAILABLE")
    world.participants.script("charge", transient(), transient())

    await world.book()
    await world.settle()

    charge = named(spans, "step charge_account")[0]
    assert [e.name for e in charge.events] == ["retry", "retry"]
    assert charge.attributes is not None
    assert charge.attributes["saga.retries"] == 2
    assert charge.attributes["saga.attempt"] == 3
    after = sample("booking_saga_retries_total", step="charge_account", code="UNAVAILABLE")
    assert after - before == 2


async def test_compensations_have_spans_and_the_finished_metric_counts_the_outcome(
    world: World, spans: InMemorySpanExporter
) -> None:
    before = sample("booking_sagas_finished_total", kind="booking", status="COMPENSATED")
    world.participants.script("charge", refused("insufficient funds"))

    await world.book()
    await world.settle()

    charge = named(spans, "step charge_account")[0]
    assert charge.attributes is not None
    assert charge.attributes["saga.outcome"] == "failed"
    assert not charge.status.is_ok
    # The refused charge applied nothing, so only the seats are given back.
    assert [s.name for s in spans.get_finished_spans() if s.name.startswith("compensate")] == [
        "compensate reserve_seats",
    ]
    after = sample("booking_sagas_finished_total", kind="booking", status="COMPENSATED")
    assert after - before == 1


async def test_a_resumed_saga_continues_the_trace_and_links_the_interrupted_run(
    spans: InMemorySpanExporter,
) -> None:
    point = crash.point("booking", "charge_account", StepPhase.ACTION, "after_call")
    world = World(crash_hook=CrashAt(point))
    try:
        request = observe.tracer.start_span("CreateBooking")
        with trace.use_span(request, end_on_exit=True):
            booking = await world.book()
        await world.settle()
        interrupted = world.log(world.saga(booking.booking_id).saga_id)[-1]

        restarted = world.start()
        await restarted.engine.recover(include_own=True)
        await world.settle()
    finally:
        await world.close()

    assert world.saga(booking.booking_id).status is SagaStatus.COMPLETED
    resumed = [
        s for s in named(spans, "saga booking") if s.attributes and s.attributes["saga.resumed"]
    ]
    assert len(resumed) == 1
    assert resumed[0].context.trace_id == request.get_span_context().trace_id
    assert [format(link.context.span_id, "016x") for link in resumed[0].links] == [
        interrupted.span_id
    ]
