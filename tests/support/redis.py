"""A real `redis-server` for tests: its own process on a free port, gone at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
MISSING = "redis-server is not on PATH: `.ci/run` installs it (apt-get install redis-server)"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers_ping(port: int) -> bool:
    """True when a Redis server on 127.0.0.1:PORT answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    """Yields the `redis://` URL of a fresh, empty, unpersisted redis-server.

    Raises RuntimeError (naming `.ci/run`) when the binary is missing, or with the
    server's log when it does not answer PING within START_TIMEOUT_S.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(MISSING)
    port = free_port()
    log_path = workdir / "redis.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_ready(server, port, log_path)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(server)


def _wait_until_ready(server: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers_ping(port):
        if server.poll() is not None or time.monotonic() > deadline:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"redis-server on port {port} did not answer PING:\n{log}")
        time.sleep(0.01)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
