"""Accounts, ledger rows and the state of charge keys."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime


class TransactionKind(enum.Enum):
    DEPOSIT = "DEPOSIT"
    CHARGE = "CHARGE"
    REFUND = "REFUND"


class ChargeKeyState(enum.Enum):
    """What became of a charge's idempotency key."""

    CHARGED = "CHARGED"
    REFUNDED = "REFUNDED"
    # A refund came before any charge: a late charge with this key is refused.
    DEAD = "DEAD"


@dataclass(frozen=True)
class Account:
    account_id: uuid.UUID
    email: str
    display_name: str
    balance_cents: int
    created_at: datetime


@dataclass(frozen=True)
class Transaction:
    """One ledger row; amount_cents is positive and the kind gives the direction."""

    transaction_id: uuid.UUID
    account_id: uuid.UUID
    kind: TransactionKind
    amount_cents: int
    idempotency_key: str
    reference: str
    created_at: datetime


@dataclass(frozen=True)
class ChargeKey:
    """The record that makes Charge and Refund idempotent and order-independent."""

    idempotency_key: str
    state: ChargeKeyState
    account_id: uuid.UUID | None
    amount_cents: int

    def same_charge(self, account_id: uuid.UUID, amount_cents: int) -> bool:
        """True when a repeated Charge asks for exactly what this key charged."""
        return self.account_id == account_id and self.amount_cents == amount_cents


@dataclass(frozen=True)
class AccountPage:
    accounts: list[Account]
    next_after: tuple[datetime, uuid.UUID] | None


@dataclass(frozen=True)
class TransactionPage:
    transactions: list[Transaction]
    next_after: tuple[datetime, uuid.UUID] | None
