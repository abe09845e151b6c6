"""Validated commands: each `parse` turns raw request fields into a command or raises."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from eventbooking.errors import InvalidArgument
from eventbooking.validation import (
    MAX_KEY_LENGTH,
    int_in_range,
    optional_text,
    page_size,
    parse_uuid,
    require_text,
)

MAX_AMOUNT_CENTS = 10_000_000_000  # 100 million in major units: no single movement is larger
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _amount(value: int) -> int:
    return int_in_range("amount_cents", value, low=1, high=MAX_AMOUNT_CENTS)


@dataclass(frozen=True)
class CreateAccount:
    email: str
    display_name: str

    @classmethod
    def parse(cls, *, email: str, display_name: str) -> CreateAccount:
        address = require_text("email", email, max_length=254).lower()
        if not _EMAIL.match(address):
            raise InvalidArgument(f"email {address!r} is not an email address")
        return cls(email=address, display_name=require_text("display_name", display_name))


@dataclass(frozen=True)
class Deposit:
    account_id: uuid.UUID
    amount_cents: int
    idempotency_key: str

    @classmethod
    def parse(cls, *, account_id: str, amount_cents: int, idempotency_key: str) -> Deposit:
        return cls(
            account_id=parse_uuid("account_id", account_id),
            amount_cents=_amount(amount_cents),
            idempotency_key=optional_text(
                "idempotency_key", idempotency_key, max_length=MAX_KEY_LENGTH
            ),
        )


@dataclass(frozen=True)
class Charge:
    account_id: uuid.UUID
    amount_cents: int
    idempotency_key: str
    reference: str

    @classmethod
    def parse(
        cls, *, account_id: str, amount_cents: int, idempotency_key: str, reference: str
    ) -> Charge:
        return cls(
            account_id=parse_uuid("account_id", account_id),
            amount_cents=_amount(amount_cents),
            idempotency_key=require_text(
                "idempotency_key", idempotency_key, max_length=MAX_KEY_LENGTH
            ),
            reference=optional_text("reference", reference),
        )


@dataclass(frozen=True)
class Refund:
    idempotency_key: str
    reason: str

    @classmethod
    def parse(cls, *, idempotency_key: str, reason: str) -> Refund:
        return cls(
            idempotency_key=require_text(
                "idempotency_key", idempotency_key, max_length=MAX_KEY_LENGTH
            ),
            reason=optional_text("reason", reason),
        )


@dataclass(frozen=True)
class ListTransactions:
    account_id: uuid.UUID
    page_size: int
    after: tuple[datetime, uuid.UUID] | None

    @classmethod
    def parse(
        cls, *, account_id: str, size: int, after: tuple[datetime, uuid.UUID] | None
    ) -> ListTransactions:
        return cls(
            account_id=parse_uuid("account_id", account_id), page_size=page_size(size), after=after
        )


@dataclass(frozen=True)
class ListAccounts:
    page_size: int
    after: tuple[datetime, uuid.UUID] | None

    @classmethod
    def parse(cls, *, size: int, after: tuple[datetime, uuid.UUID] | None) -> ListAccounts:
        return cls(page_size=page_size(size), after=after)
