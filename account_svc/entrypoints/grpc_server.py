"""The AccountService servicer: proto in, command, handler, proto out.

The server's access table has let the caller in already; the methods that
name an account check here that the caller may act for it.
"""

from __future__ import annotations

from typing import Any

import grpc

from account_svc.domain import commands
from account_svc.domain.model import Account, Transaction, TransactionKind
from account_svc.service_layer.handlers import AccountHandlers
from eventbooking import auth
from eventbooking.account.v1 import account_pb2 as pb
from eventbooking.account.v1 import account_pb2_grpc
from eventbooking.errors import Unauthenticated
from eventbooking.paging import decode_token, encode_token
from eventbooking.protoconv import timestamp
from eventbooking.validation import parse_uuid

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AccountService"].full_name

_KIND = {
    TransactionKind.DEPOSIT: pb.TRANSACTION_KIND_DEPOSIT,
    TransactionKind.CHARGE: pb.TRANSACTION_KIND_CHARGE,
    TransactionKind.REFUND: pb.TRANSACTION_KIND_REFUND,
}

Context = grpc.aio.ServicerContext[Any, Any]


def account_pb(a: Account) -> pb.Account:
    return pb.Account(
        account_id=str(a.account_id),
        email=a.email,
        display_name=a.display_name,
        balance_cents=a.balance_cents,
        created_at=timestamp(a.created_at),
    )


def transaction_pb(t: Transaction) -> pb.Transaction:
    return pb.Transaction(
        transaction_id=str(t.transaction_id),
        account_id=str(t.account_id),
        kind=_KIND[t.kind],
        amount_cents=t.amount_cents,
        idempotency_key=t.idempotency_key,
        reference=t.reference,
        created_at=timestamp(t.created_at),
    )


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, handlers: AccountHandlers) -> None:
        self._handlers = handlers

    async def CreateAccount(
        self, request: pb.CreateAccountRequest, context: Context
    ) -> pb.CreateAccountResponse:
        cmd = commands.CreateAccount.parse(email=request.email, display_name=request.display_name)
        created = await self._handlers.create_account(cmd)
        return pb.CreateAccountResponse(
            account=account_pb(created.account), api_token=created.api_token
        )

    async def GetAccount(
        self, request: pb.GetAccountRequest, context: Context
    ) -> pb.GetAccountResponse:
        account_id = parse_uuid("account_id", request.account_id)
        auth.require_account(account_id)
        account = await self._handlers.get_account(account_id)
        return pb.GetAccountResponse(account=account_pb(account))

    async def Deposit(self, request: pb.DepositRequest, context: Context) -> pb.DepositResponse:
        cmd = commands.Deposit.parse(
            account_id=request.account_id,
            amount_cents=request.amount_cents,
            idempotency_key=request.idempotency_key,
        )
        auth.require_account(cmd.account_id)
        account, txn = await self._handlers.deposit(cmd)
        return pb.DepositResponse(account=account_pb(account), transaction=transaction_pb(txn))

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: Context
    ) -> pb.ListTransactionsResponse:
        cmd = commands.ListTransactions.parse(
            account_id=request.account_id,
            size=request.page_size,
            after=decode_token(request.page_token),
        )
        auth.require_account(cmd.account_id)
        page = await self._handlers.list_transactions(cmd)
        return pb.ListTransactionsResponse(
            transactions=[transaction_pb(t) for t in page.transactions],
            next_page_token=encode_token(*page.next_after) if page.next_after else "",
        )

    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: Context
    ) -> pb.ListAccountsResponse:
        cmd = commands.ListAccounts.parse(
            size=request.page_size, after=decode_token(request.page_token)
        )
        page = await self._handlers.list_accounts(cmd)
        return pb.ListAccountsResponse(
            accounts=[account_pb(a) for a in page.accounts],
            next_page_token=encode_token(*page.next_after) if page.next_after else "",
        )

    async def Charge(self, request: pb.ChargeRequest, context: Context) -> pb.ChargeResponse:
        cmd = commands.Charge.parse(
            account_id=request.account_id,
            amount_cents=request.amount_cents,
            idempotency_key=request.idempotency_key,
            reference=request.reference,
        )
        moved = await self._handlers.charge(cmd)
        return pb.ChargeResponse(
            transaction=transaction_pb(moved.transaction), balance_cents=moved.balance_cents
        )

    async def Refund(self, request: pb.RefundRequest, context: Context) -> pb.RefundResponse:
        cmd = commands.Refund.parse(idempotency_key=request.idempotency_key, reason=request.reason)
        txn = await self._handlers.refund(cmd)
        return pb.RefundResponse(transaction=transaction_pb(txn)) if txn else pb.RefundResponse()

    async def RotateToken(
        self, request: pb.RotateTokenRequest, context: Context
    ) -> pb.RotateTokenResponse:
        account_id = parse_uuid("account_id", request.account_id)
        auth.require_account(account_id)
        return pb.RotateTokenResponse(api_token=await self._handlers.rotate_token(account_id))

    async def AuthenticateToken(
        self, request: pb.AuthenticateTokenRequest, context: Context
    ) -> pb.AuthenticateTokenResponse:
        account_id = await self._handlers.authenticate(request.token)
        if account_id is None:
            # The message names no token: it may end up in logs and spans.
            raise Unauthenticated("the token is not valid")
        return pb.AuthenticateTokenResponse(account_id=str(account_id))
