"""The admin server: the Admin gRPC service on its own port, and optional Prometheus metrics.

Its own grpc.aio server, apart from the listeners, so an operator's firewall
can tell the two apart and admin calls never queue behind proxied traffic.
Besides `ballast.admin.v1.Admin` it serves grpc.health.v1 (open, for probes)
and server reflection (behind the token, like the service: `grpcurl -H
'authorization: Bearer …' 127.0.0.1:9901 list` works).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from balancer.admin.auth import TokenAuth
from balancer.admin.metrics import balancer_registry
from balancer.admin.service import AdminService
from balancer.admin.snapshot import Reader, WallClock
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import AdminConfig, parse_address
from balancer.metrics_http import MetricsServer
from balancer.server import ListenError, bind
from balancer.tls import is_loopback

if TYPE_CHECKING:
    from balancer.server import Balancer

log = logging.getLogger(__name__)

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name


class AdminServer:
    """Serves the admin API of `balancer` as `config` says: `start()`, then `stop()`.

    After `start`, `address` is the bound `host:port` of the gRPC API (the real
    port when the config says 0) and `metrics_address` that of the Prometheus
    endpoint, or None when `config.metrics_address` is not set.
    """

    def __init__(
        self, balancer: Balancer, config: AdminConfig, *, wall_clock: WallClock = time.time
    ) -> None:
        if not config.token:
            raise ValueError("the admin API needs a token (admin.token or BALLAST_ADMIN_TOKEN)")
        self._config = config
        self._reader = Reader(balancer, wall_clock=wall_clock)
        self._service = AdminService(balancer, self._reader)
        self._auth = TokenAuth(config.token)
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._metrics: MetricsServer | None = None
        self.address: str | None = None
        self.metrics_address: str | None = None

    async def start(self) -> None:
        """Binds both ports and serves; raises ListenError (nothing left running) when it cannot."""
        server = grpc.aio.server(interceptors=[self._auth], options=[("grpc.so_reuseport", 0)])
        admin_pb2_grpc.add_AdminServicer_to_server(self._service, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.address = bind(server, self._config.address, "admin API", self._config.tls)
        await server.start()
        self._server = server
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self._config.metrics_address is not None:
            try:
                host, port = parse_address(self._config.metrics_address)
                registry = balancer_registry(self._reader)
                self._metrics = MetricsServer(registry, host, port, self._config.tls)
                port = self._metrics.start()
                self.metrics_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            except OSError as err:
                self._metrics = None
                await self.stop(grace_s=0)
                raise ListenError(
                    f"cannot listen on {self._config.metrics_address} (metrics): {err.strerror};"
                    " pick another admin.metrics_address or stop what holds it"
                ) from None
        log.info(
            "admin API on %s; metrics on %s%s",
            self.address,
            self.metrics_address or "(disabled)",
            "" if self._config.tls is None else " (TLS)",
        )
        self._warn_if_exposed()

    def _warn_if_exposed(self) -> None:
        """One warning line when a port of this server is reachable off this machine in clear."""
        if self._config.tls is not None:
            return
        ports = [("admin API", self.address), ("metrics", self.metrics_address)]
        exposed = [
            f"{what} on {address}"
            for what, address in ports
            if address is not None and not is_loopback(parse_address(address)[0])
        ]
        if exposed:
            log.warning(
                "%s: not a loopback address and no TLS, so the bearer token and the"
                " cluster's state cross the network in clear text; set [admin.tls]"
                " cert_file and key_file, or bind to 127.0.0.1",
                " and ".join(exposed),
            )

    async def stop(self, grace_s: float = 0.5) -> None:
        """Stops both; open watch streams get `grace_s`, then they are cancelled."""
        if self._metrics is not None:
            # shutdown() waits for the HTTP thread's poll loop: keep it off the event loop.
            await asyncio.to_thread(self._metrics.stop)
            self._metrics = None
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace_s)
            self._server = None
