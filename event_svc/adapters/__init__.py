"""SQLAlchemy tables and repositories of the event database."""
