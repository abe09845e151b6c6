"""Accounts, ledger rows and charge keys as plain Python, with their rules."""
