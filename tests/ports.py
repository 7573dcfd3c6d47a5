"""The one place tests get a port that must be known before the process that binds it starts.

Prefer port 0 wherever the code under test binds and reports what it got (`Sink.port` after
`start()`, `LabGateway.listen`, a server's "listening on" line). Where a port must be chosen
first (a private Postfix's relay target, `--sink` for a subprocess, a port nobody listens on),
use `unused_port()`. The classic pick (bind port 0, close, hand the number over) races: the
kernel hands the same ephemeral ports to every other bind(0) and outgoing connection on the host,
the second xdist worker's included, until the process that needs it binds it. This helper picks
outside the kernel's ephemeral range, so no automatic assignment can take it; from a slice of its
own per xdist worker, at a random place, never the same port twice in one process; and only a
port it could bind itself right now (SO_REUSEADDR, as the servers under test bind).
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import socket
from pathlib import Path

LOWEST = 10_000  # below: ports a developer's own services commonly use
SLICES = 8  # xdist workers gw0..gw7 get disjoint slices; more workers share them


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152  # the IANA dynamic range: macOS and Windows use it


def _candidates() -> itertools.cycle[int]:
    top = _ephemeral_start()
    if top - LOWEST < 1_000 * SLICES:  # an unusual range: fall back to the whole of it
        top = 65_536
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    size = (top - LOWEST) // SLICES
    start = LOWEST + (int(worker) % SLICES if worker.isdigit() else 0) * size
    ports = list(range(start, start + size))
    offset = random.Random(os.getpid()).randrange(size)
    return itertools.cycle(ports[offset:] + ports[:offset])


_next = _candidates()
_given: set[int] = set()


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def unused_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, that no bind(0) on this host will be handed."""
    for port in _next:
        if port not in _given and bindable(port, host):
            _given.add(port)
            return port
    raise AssertionError("unreachable: the cycle never ends")
