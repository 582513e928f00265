"""Sockets for tests that need a port already taken."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def taken_port() -> Iterator[str]:
    """Yields `127.0.0.1:PORT` of a listening socket held open until the block ends."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield f"127.0.0.1:{taken.getsockname()[1]}"
