"""Delivery sinks: the log, a JSON Lines file, SMTP."""
