"""A Prometheus `/metrics` endpoint for one private registry, served from a thread."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from balancer.tls import ServerTls

# A scrape that sends nothing for this long is dropped, so idle connections hold no thread.
_IDLE_TIMEOUT_S = 30.0


class _Handler(WSGIRequestHandler):
    timeout = _IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds is not news."""


class MetricsServer:
    """prometheus_client's WSGI app on a threading server, with a start that says where and
    a safe stop; over HTTPS with `tls` (client certificates required with its client CA)."""

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
            server = self._bind()
        except OSError as err:
            where = f"[{self._host}]" if ":" in self._host else self._host
            raise OSError(
                err.errno, f"cannot serve /metrics on {where}:{self._port}: {err.strerror}"
            ) from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return int(server.server_port)

    def _bind(self) -> WSGIServer:
        family = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that failed the TLS handshake, went idle or went away is not
                # the server's error: no traceback on stderr for it.
                if not isinstance(sys.exc_info()[1], OSError):
                    super().handle_error(request, client_address)

        app = make_wsgi_app(self._registry)
        server = make_server(self._host, self._port, app, Server, handler_class=_Handler)
        if self._tls is not None:
            # The handshake happens in the request's thread (do_handshake_on_connect off):
            # done in accept(), one client that connects and sends nothing would stall
            # every scrape, as prometheus_client's own start_http_server does.
            context = _ssl_context(self._tls)
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        return server

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


def _ssl_context(tls: ServerTls) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
