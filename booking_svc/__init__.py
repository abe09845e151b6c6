"""Booking service: bookings, and the sagas that reserve, charge, confirm and notify for them."""
