"""free_port hands out ports that a server can bind, out of the way of outgoing connections."""

from __future__ import annotations

import socket

from eventbooking.localpg import _first_ephemeral_port, free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(30)]

    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < _first_ephemeral_port() for port in ports)
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_handed_out() -> None:
    taken = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for sock in taken:
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
        busy = {sock.getsockname()[1] for sock in taken}

        assert busy.isdisjoint(free_port() for _ in range(200))
    finally:
        for sock in taken:
            sock.close()
