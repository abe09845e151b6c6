"""python -m notification_svc: serve the NotificationService until SIGTERM."""

from eventbooking import server
from notification_svc.bootstrap import server_parts
from notification_svc.settings import Settings

if __name__ == "__main__":
    server.main(Settings, server_parts)
