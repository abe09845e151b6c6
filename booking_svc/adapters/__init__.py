"""SQLAlchemy tables and repositories of the booking database."""
