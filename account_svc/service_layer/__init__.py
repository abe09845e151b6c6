"""Handlers and the unit of work."""
