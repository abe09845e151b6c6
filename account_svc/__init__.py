"""Account service: accounts, balances and a ledger of deposits, charges and refunds."""
