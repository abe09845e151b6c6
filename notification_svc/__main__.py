"""`python -m notification_svc`: serve NotificationService until SIGTERM."""

from __future__ import annotations

from eventbooking import logs, server, settings
from notification_svc.bootstrap import server_parts
from notification_svc.settings import Settings


def main() -> None:
    """Load settings (exiting on a bad variable), configure logging, and serve."""
    config = settings.load(Settings)
    logs.configure(config.log_level, config.log_format)
    services, lifecycle = server_parts(config)
    server.run(config, services, lifecycle)


if __name__ == "__main__":
    main()
