"""The workload server: Inventory and Knobs, health, reflection, channelz and /metrics.

`Workload.serve(shutdown_trigger)` runs until the trigger returns, then stops gracefully: health
turns NOT_SERVING, no new calls are accepted, in-flight ones get `shutdown_grace_s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from grpc_channelz.v1 import channelz, channelz_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from balancer.lifecycle import ShutdownTrigger, serve_until
from balancer.metrics_http import MetricsServer
from balancer.server import bind
from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc
from demo.workload.behaviour import Misbehaviour
from demo.workload.interceptor import MetricsInterceptor
from demo.workload.knobs import Knobs
from demo.workload.metrics import workload_registry
from demo.workload.service import InventoryService, KnobsService

log = logging.getLogger("demo.workload")

INVENTORY = pb.DESCRIPTOR.services_by_name["Inventory"].full_name
KNOBS = pb.DESCRIPTOR.services_by_name["Knobs"].full_name
HEALTH = health.SERVICE_NAME
CHANNELZ = channelz_pb2.DESCRIPTOR.services_by_name["Channelz"].full_name


@dataclass(frozen=True)
class WorkloadConfig:
    """Where and as whom the pod serves. Ports 0 pick free ones; `metrics_port` None: no /metrics.

    `max_connection_age_s` (None: connections live forever, gRPC's default) makes the server
    send GOAWAY to a connection that old (±10 %, gRPC's jitter), so clients reconnect: the
    classic mitigation for L4 pinning. Calls in flight then get `max_connection_age_grace_s`.
    """

    pod: str
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int | None = 0
    max_connection_age_s: float | None = None
    max_connection_age_grace_s: float = 10.0
    shutdown_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.pod:
            raise ValueError("pod: the pod name must not be empty")
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535, got {value}")
        if self.max_connection_age_s is not None:
            _positive("max_connection_age_s", self.max_connection_age_s)
        _positive("max_connection_age_grace_s", self.max_connection_age_grace_s, zero_ok=True)
        _positive("shutdown_grace_s", self.shutdown_grace_s, zero_ok=True)

    def grpc_options(self) -> list[tuple[str, Any]]:
        # No SO_REUSEPORT: a second pod on a taken port must fail, not share it silently.
        options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
        if self.max_connection_age_s is not None:
            options += [
                ("grpc.max_connection_age_ms", _ms(self.max_connection_age_s)),
                ("grpc.max_connection_age_grace_ms", _ms(self.max_connection_age_grace_s)),
            ]
        return options


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        kind = "a number ≥ 0" if zero_ok else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value}")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Workload:
    """One demo pod. Random generator, sleep and clocks come in for deterministic tests."""

    def __init__(
        self,
        config: WorkloadConfig,
        knobs: Knobs | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        cpu_clock: Callable[[], float] = time.thread_time,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.misbehaviour = Misbehaviour(
            knobs or Knobs(), rng=rng or random.Random(), sleep=sleep, cpu_clock=cpu_clock
        )
        self.registry, self._metrics = workload_registry(config.pod, self.misbehaviour)
        self._metrics.initialize(pb.DESCRIPTOR)
        self._clock = clock
        self._sleep = sleep
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._metrics_server: MetricsServer | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        """`host:port` of the gRPC server; only once started."""
        assert self.port is not None, "not started"
        return host_port(self.config.host, self.port)

    @property
    def metrics_address(self) -> str | None:
        if self.metrics_port is None:
            return None
        return host_port(self.config.host, self.metrics_port)

    async def start(self) -> None:
        """Binds and serves (health SERVING); raises OSError when a port cannot be bound."""
        server = self._build_server()
        bound = bind(server, host_port(self.config.host, self.config.port), "gRPC")
        self.port = int(bound.rpartition(":")[2])
        if self.config.metrics_port is not None:
            self._metrics_server = MetricsServer(
                self.registry, self.config.host, self.config.metrics_port
            )
            self.metrics_port = self._metrics_server.start()
        await server.start()
        self._server = server
        for service in ("", INVENTORY, KNOBS):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s: serving gRPC on %s", self.config.pod, self.address)

    def _build_server(self) -> grpc.aio.Server:
        pod, mis = self.config.pod, self.misbehaviour
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(self._metrics, self._clock)],
            options=self.config.grpc_options(),
        )
        inventory = InventoryService(pod, mis, self._sleep)
        pb_grpc.add_InventoryServicer_to_server(inventory, server)  # type: ignore[no-untyped-call]
        pb_grpc.add_KnobsServicer_to_server(KnobsService(pod, mis), server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (INVENTORY, KNOBS, HEALTH, CHANNELZ, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        channelz.add_channelz_servicer(server)
        return server

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, then stops accepting calls; in-flight ones get `grace_s` to finish."""
        grace_s = self.config.shutdown_grace_s if grace_s is None else grace_s
        # Taken before the first await, so a second stop() meanwhile finds nothing to stop.
        server, self._server = self._server, None
        metrics_server, self._metrics_server = self._metrics_server, None
        await self._health.enter_graceful_shutdown()
        if server is not None:
            await server.stop(grace_s)
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.stop)

    async def serve(self, shutdown_trigger: ShutdownTrigger) -> None:
        """Runs until `shutdown_trigger` returns, then stops gracefully."""
        await serve_until(self, shutdown_trigger)
