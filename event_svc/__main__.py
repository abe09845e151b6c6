"""python -m event_svc: serve the EventService until SIGTERM."""

from event_svc.bootstrap import server_parts
from event_svc.settings import Settings
from eventbooking import server

if __name__ == "__main__":
    server.main(Settings, server_parts)
