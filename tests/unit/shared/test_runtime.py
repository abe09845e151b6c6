"""The shared runtime pieces that need no server: tokens, validation, settings, errors, logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import grpc
import pytest

from eventbooking import errors
from eventbooking.interceptors import STATUS_FOR, status_for
from eventbooking.logs import JsonFormatter
from eventbooking.paging import decode_token, encode_token
from eventbooking.retry import is_transient
from eventbooking.validation import int_in_range, optional_text, page_size, parse_uuid, require_text


def test_page_tokens_round_trip_and_refuse_garbage() -> None:
    at, row = datetime(2026, 5, 1, 12, 30, tzinfo=UTC), uuid.uuid4()
    assert decode_token(encode_token(at, row)) == (at, row)
    assert decode_token("") is None
    for bad in ("garbage", "!!!!", encode_token(at, row)[:-3], "e30"):
        with pytest.raises(errors.InvalidArgument, match="page_token is not a token"):
            decode_token(bad)


def test_validation_messages_name_the_field() -> None:
    with pytest.raises(errors.InvalidArgument, match="event_id is required"):
        parse_uuid("event_id", "")
    with pytest.raises(errors.InvalidArgument, match=r"event_id must be a UUID, got 'x{40}\.\.\.'"):
        parse_uuid("event_id", "x" * 1000)
    with pytest.raises(errors.InvalidArgument, match="name is required"):
        require_text("name", "   ")
    with pytest.raises(
        errors.InvalidArgument, match="name is 201 characters long; the limit is 200"
    ):
        require_text("name", "n" * 201)
    with pytest.raises(errors.InvalidArgument, match="quantity must be between 1 and 10, got 0"):
        int_in_range("quantity", 0, low=1, high=10)
    assert optional_text("reason", "  why ") == "why"
    assert page_size(0) == 50
    with pytest.raises(errors.InvalidArgument, match="page_size must be between 1 and 500"):
        page_size(-1)


def test_every_domain_error_has_its_status_code() -> None:
    assert set(STATUS_FOR) == {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.DomainError)
        and cls is not errors.DomainError
    }
    assert status_for(errors.FailedPrecondition("sold out")) is grpc.StatusCode.FAILED_PRECONDITION

    class SoldOut(errors.FailedPrecondition):
        pass

    assert status_for(SoldOut("x")) is grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.DomainError("?")) is grpc.StatusCode.INTERNAL


def test_only_transient_codes_are_retried() -> None:
    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    assert is_transient(Failed(grpc.StatusCode.UNAVAILABLE))
    assert is_transient(Failed(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not is_transient(Failed(grpc.StatusCode.FAILED_PRECONDITION))
    assert not is_transient(ValueError("not an rpc"))


def test_json_logs_are_one_object_per_line_with_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "svc",
            "levelname": "INFO",
            "levelno": 20,
            "msg": "charged %s",
            "args": ("a",),
            "saga_id": "s-1",
        }
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "charged a"
    assert entry["saga_id"] == "s-1"
    assert entry["level"] == "INFO"


def test_bad_settings_exit_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "account_svc"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"ACCOUNT_SVC_PORT": "seventy", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "ACCOUNT_SVC_PORT" in result.stderr
    assert "ACCOUNT_SVC_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
