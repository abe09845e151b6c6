"""Log records carry the trace, span and saga they were logged in, in text and in JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from eventbooking import logs, telemetry

tracer = TracerProvider().get_tracer("test")


def record(**extra: object) -> logging.LogRecord:
    values: dict[str, object] = {"name": "svc", "levelname": "INFO", "levelno": 20, "msg": "hi"}
    return logging.makeLogRecord({**values, **extra})


def filtered(**extra: object) -> logging.LogRecord:
    made = record(**extra)
    assert logs.ContextFilter().filter(made) is True
    return made


def test_records_carry_the_ids_of_the_current_span_and_none_outside_one() -> None:
    with tracer.start_as_current_span("work"):
        inside = filtered()
        trace_id, span_id = telemetry.current_ids()
    outside = filtered()

    assert (inside.trace_id, inside.span_id) == (trace_id, span_id)
    assert trace_id is not None
    assert len(trace_id) == 32
    assert not hasattr(outside, "trace_id")
    assert not hasattr(outside, "span_id")


def test_records_carry_the_saga_id_while_it_is_set() -> None:
    token = logs.saga_id.set("saga-1")
    try:
        during = filtered()
        explicit = filtered(saga_id="saga-2")
    finally:
        logs.saga_id.reset(token)
    after = filtered()

    assert during.saga_id == "saga-1"
    assert explicit.saga_id == "saga-2", "an id passed with extra= is kept"
    assert not hasattr(after, "saga_id")


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_have_the_ids_as_keys(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    token = logs.saga_id.set("saga-9")
    try:
        with tracer.start_as_current_span("work"):
            logging.getLogger("booking_svc.engine").info("step done", extra={"step": "charge"})
            trace_id, span_id = telemetry.current_ids()
    finally:
        logs.saga_id.reset(token)
    logging.getLogger("booking_svc.engine").info("idle")

    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "step done"
    assert (first["trace_id"], first["span_id"], first["saga_id"]) == (trace_id, span_id, "saga-9")
    assert first["step"] == "charge"
    assert {"trace_id", "span_id", "saga_id"}.isdisjoint(second)


@pytest.mark.usefixtures("restore_root_logger")
def test_text_lines_have_the_ids_like_other_extras(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text")
    with tracer.start_as_current_span("work"):
        logging.getLogger("svc").info("hello", extra={"port": 1})
        trace_id, span_id = telemetry.current_ids()

    line = capsys.readouterr().err.strip()
    assert line.endswith(f"svc: hello port=1 trace_id={trace_id} span_id={span_id}")
