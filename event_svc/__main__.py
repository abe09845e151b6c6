"""python -m event_svc: serve the EventService."""

from event_svc.bootstrap import server_parts
from event_svc.settings import Settings
from eventbooking import logs, server
from eventbooking.settings import load


def main() -> None:
    settings = load(Settings)
    logs.configure(settings.log_level, settings.log_format)
    server.run(settings, *server_parts(settings))


if __name__ == "__main__":
    main()
