"""Event service: events, their capacity and seat reservations (held, confirmed, released)."""
