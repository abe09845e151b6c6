"""Handlers, the unit of work and the sweeper of lapsed holds."""
