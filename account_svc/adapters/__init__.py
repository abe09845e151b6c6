"""SQLAlchemy tables and repositories of the account database."""
