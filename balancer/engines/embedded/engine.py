"""The embedded engine: a grpc.aio server whose generic handler proxies every call.

Every feature of the cluster state applies per call, in-process: the picker
chooses the endpoint of each call, the call's result feeds outlier detection
and the load estimate, and a drain timeout cancels the calls themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from balancer import connections, reflection
from balancer.cluster import Clock, Cluster
from balancer.config import BalancerConfig
from balancer.endpoint import Address, State, StateChange
from balancer.engines.base import EngineFigures
from balancer.engines.embedded.proxy import Limits, ProxyHandler, Router
from balancer.listen import bind, connection_age_options, grpc_options

log = logging.getLogger(__name__)

_REFLECTION_TIMEOUT_S = 5.0


class EmbeddedEngine:
    """The `Engine` that proxies calls itself. `proxy` is its generic handler."""

    name = "embedded"

    def __init__(
        self,
        config: BalancerConfig,
        clusters: Mapping[str, Cluster],
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        router = Router(config.routes, dict(clusters), config.default_cluster)
        limits = Limits(config.max_message_bytes, config.max_in_flight_bytes)
        self.proxy = ProxyHandler(
            router, clock=clock, record_stats=config.record_stats, limits=limits
        )
        self._server: grpc.aio.Server | None = None
        self._server_id: int | None = None
        self._before: set[int] = set()
        self._learned: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self) -> Sequence[str]:
        self._before = connections.server_ids()
        server = grpc.aio.server(options=self._server_options())
        server.add_generic_rpc_handlers([self.proxy])
        self._server = server
        # Bound first, so a taken port fails at once; calls that connect before `start`
        # wait in the backlog.
        return [bind(server, lc.address, "listener", lc.tls) for lc in self._config.listeners]

    def _server_options(self) -> list[tuple[str, Any]]:
        return [
            *grpc_options(self._config.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Sent in HTTP/2 SETTINGS: a client's streams past it wait on the client's side.
            ("grpc.max_concurrent_streams", self._config.max_concurrent_streams),
            *connection_age_options(self._config),
        ]

    async def start(self) -> None:
        assert self._server is not None, "bind() first"
        await self._server.start()
        self._server_id = min(connections.server_ids() - self._before, default=None)

    async def stop(self, grace_s: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cluster_changed(self, cluster: Cluster) -> None:
        """Nothing to do: the picker the cluster rebuilt is read on every call."""

    def endpoint_changed(self, cluster: Cluster, change: StateChange) -> None:
        """On a cluster's first READY endpoint, learns its unary methods by reflection."""
        wants_reflection = cluster.config.discover_unary_methods
        if wants_reflection and change.new is State.READY and cluster.name not in self._learned:
            self._learned.add(cluster.name)
            ep = cluster.endpoints[change.endpoint_id]
            task = asyncio.get_running_loop().create_task(self._learn_unary(cluster, ep.address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _learn_unary(self, cluster: Cluster, address: Address) -> None:
        ep = cluster.endpoints.get(address.endpoint_id)
        if ep is None or ep.channel is None:
            self._learned.discard(cluster.name)
            return
        try:
            methods = await reflection.unary_methods(ep.channel, _REFLECTION_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.UNIMPLEMENTED:
                self._learned.discard(cluster.name)  # try again with the next READY endpoint
            log.info("cluster %s: no server reflection (%s)", cluster.name, err.code().name)
            return
        cluster.unary_methods |= methods
        self.proxy.forget_methods()
        log.info("cluster %s: %d unary methods learned by reflection", cluster.name, len(methods))

    def connections_by_peer(self) -> Mapping[str, int]:
        if self._server_id is None:
            return {}
        return connections.connections_by_peer(self._server_id)

    def figures(self) -> EngineFigures:
        budget = self.proxy.limits.budget
        return EngineFigures(
            name=self.name,
            messages_over_budget_total=budget.refused,
            in_flight_message_bytes=budget.in_flight_bytes,
        )
