"""``free_port``: a free loopback port outside the range the OS hands to ``bind(0)``."""

from __future__ import annotations

import socket

from infertide.local.broker import FREE_PORTS, free_port


def test_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    for _ in range(20):
        port = free_port()
        assert port in FREE_PORTS and not low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: it binds


def test_a_taken_port_is_never_returned() -> None:
    held = []
    try:
        for _ in range(30):
            s = socket.socket()
            s.bind(("127.0.0.1", free_port()))
            held.append(s)
        assert len({s.getsockname()[1] for s in held}) == len(held)
    finally:
        for s in held:
            s.close()
