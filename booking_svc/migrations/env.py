"""Alembic environment of the booking database; run through eventbooking.db.upgrade."""

from booking_svc.adapters.tables import metadata
from eventbooking.db import run_migrations_online

run_migrations_online(metadata)
