"""Alembic environment of the account database; run through eventbooking.db.upgrade."""

from account_svc.adapters.tables import metadata
from eventbooking.db import run_migrations_online

run_migrations_online(metadata)
