"""python -m account_svc: serve the AccountService until SIGTERM."""

from account_svc.bootstrap import server_parts
from account_svc.settings import Settings
from eventbooking import server

if __name__ == "__main__":
    server.main(Settings, server_parts)
