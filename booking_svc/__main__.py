"""python -m booking_svc: serve the BookingService and run sagas until SIGTERM."""

from booking_svc.bootstrap import server_parts
from booking_svc.settings import Settings
from eventbooking import server

if __name__ == "__main__":
    server.main(Settings, server_parts)
