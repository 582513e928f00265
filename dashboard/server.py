"""The dashboard process: the ASGI application on uvicorn in the caller's event loop, with
the collector beside it when it is embedded (`python -m dashboard`, `make demo`).

One event loop holds the web server, the websocket consumers and the collector, so
the in-memory channel layer and the page history serve all of them without Redis.
Django must be set up (settings configured) before `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from balancer.lifecycle import Service, ShutdownTrigger, serve_until

# Connections get this long to finish once stop() is called; websockets are closed
# with 1012 (service restart) at once, so browsers reconnect to the next process.
SHUTDOWN_GRACE_S = 2


# What runs beside the web server in its loop: the collector, or a frame follower.
Background = Service


class ListenError(OSError):
    """The dashboard cannot listen on the address it was given."""


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process that embeds it owns
    SIGINT and SIGTERM and calls `DashboardServer.stop()`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with two gaps of uvicorn 0.54 closed.

    A handshake the websockets library refuses (a header line over 8 KiB, more than
    128 headers: 431; a malformed request) has its answer queued but never sent, and
    the client waits forever: this sends it and closes. An application's own HTTP
    answer to a handshake (`websocket.http.response.*`, the 404 of an unknown path)
    is sent, then logged as an error ("returned without completing handshake"): it
    is complete once its body is sent."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        refused = self.conn.handshake_exc is not None and not self.handshake_complete
        if refused and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (0: any free port); ListenError says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as err:
        raise ListenError(
            err.errno, f"cannot listen on {host}:{port}: {os.strerror(err.errno or 0)}"
        ) from None


class DashboardServer:
    """Serves the dashboard on `host:port` (port 0: a free one) with `background` (the
    embedded collector, or what fills the page history from the channel layer).

    `start()` returns once the port accepts connections; `stop()` closes
    websockets, lets requests finish for `SHUTDOWN_GRACE_S` and stops the background.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 8000, background: Background | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.background = background
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> None:
        """Takes the port now (start() does it otherwise): a taken port fails before
        anything else is started. Raises ListenError."""
        if self._socket is None:
            self._socket = listen(self.host, self.port)
            self.port = self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the dashboard server is already running")
        from dashboard.asgi import application  # needs Django's settings: import late

        self.bind()
        sock, self._socket = self._socket, None
        assert sock is not None
        config = uvicorn.Config(
            application,
            lifespan="off",
            ws=_WebSocketProtocol,
            # Frames are a few KB a second; compressing them per browser costs more CPU
            # than the bytes are worth on the networks a dashboard is used over.
            ws_per_message_deflate=False,
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        self._server = _Server(config)
        if self.background is not None:
            await self.background.start()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="dashboard")
        # uvicorn tells it has started by a flag only, no event to wait on.
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._task.done():
            await self.stop()
            raise RuntimeError("the dashboard server stopped while starting; see the log above")

    async def stop(self) -> None:
        """Stops serving and the background. Idempotent."""
        if self._socket is not None:  # bound, never started
            self._socket.close()
            self._socket = None
        task, self._task = self._task, None
        if self._server is not None:
            self._server.should_exit = True
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.background is not None:
            await self.background.stop()

    async def serve(self, shutdown_trigger: ShutdownTrigger) -> None:
        """Runs until `shutdown_trigger` returns (or this is cancelled), then stops."""
        await serve_until(self, shutdown_trigger)


def setup_django(**defaults: str) -> None:
    """Sets Django up from the environment, `defaults` filling the variables not set
    (``DJANGO_SETTINGS_MODULE`` is ``dashboard.settings`` unless set)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    django.setup()


def migrate() -> None:
    """Brings the database schema up to date (quietly; errors raise)."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
