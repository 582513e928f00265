"""A Prometheus `/metrics` endpoint for one private registry, served from a thread."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from balancer.tls import ServerTls


class MetricsServer:
    """prometheus_client's own HTTP server, with a start that says where and a safe stop."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, tls: ServerTls | None = None
    ) -> None:
        self._registry = registry
        self._tls = tls
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Binds and serves; returns the bound port. Raises OSError naming the address."""
        try:
            tls = self._tls
            self._server, self._thread = start_http_server(
                self._port,
                addr=self._host,
                registry=self._registry,
                # HTTPS when the admin API has TLS; a client CA makes client certs required.
                certfile=tls.cert_file if tls else None,
                keyfile=tls.key_file if tls else None,
                client_cafile=tls.client_ca_file if tls else None,
                client_auth_required=tls is not None and tls.mutual,
            )
        except OSError as err:
            where = f"[{self._host}]" if ":" in self._host else self._host
            raise OSError(
                err.errno, f"cannot serve /metrics on {where}:{self._port}: {err.strerror}"
            ) from None
        return int(self._server.server_port)

    def stop(self) -> None:
        """Stops serving and joins the thread; safe to call twice, even at once.

        Blocks up to half a second (the server's poll interval): call it off the event loop.
        """
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
