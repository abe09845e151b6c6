"""Alembic environment of the event database; run through eventbooking.db.upgrade."""

from event_svc.adapters.tables import metadata
from eventbooking.db import run_migrations_online

run_migrations_online(metadata)
