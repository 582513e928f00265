"""The balancer process: clusters and their background work, the engine, admin API.

The cluster state (`balancer.cluster`) and the engine that carries calls
(`balancer.engines`) are composed here and know nothing of each other's
internals: every cluster notification is forwarded to the engine.

`Balancer` is embeddable (tests, the demo): `start()`, then `stop()`; or
`serve(shutdown_trigger)` where the caller owns shutdown, as hypercorn does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from balancer.cluster import ChannelFactory, Clock, Cluster
from balancer.config import BalancerConfig, ClusterConfig, ControlPlaneConfig
from balancer.discovery import Discovery, StaticDiscovery
from balancer.endpoint import StateChange
from balancer.engines import Engine, make_engine
from balancer.health import HealthChecker
from balancer.lifecycle import ShutdownTrigger, serve_until

# Re-exported: the admin API, the demo workload and tests bind through these names.
from balancer.listen import ListenError as ListenError
from balancer.listen import bind as bind
from balancer.listen import grpc_options
from balancer.tls import open_channel

if TYPE_CHECKING:
    from balancer.admin.server import AdminServer
    from balancer.xds.server import XdsServer

log = logging.getLogger(__name__)

DiscoveryFactory = Callable[[ClusterConfig], Discovery]
_SLOW_START_TICK_S = 0.5
# How long start() waits for each cluster's first discovery update (Envoy: initial_fetch_timeout).
_INITIAL_FETCH_TIMEOUT_S = 5.0
_DISCOVERY_RETRY_S = (0.5, 1, 2, 5, 10)


class NoPlatform(ValueError):
    """A cluster wants platform discovery, and the balancer was given no platform."""


def static_discovery(config: ClusterConfig) -> Discovery:
    """The default discovery: the config's endpoint list; refuses kind `platform`."""
    if config.discovery.kind != "static":
        raise NoPlatform(
            f"cluster {config.name!r}: discovery kind {config.discovery.kind!r} needs a platform;"
            " run the balancer from the demo scene (python -m demo), or list endpoints with"
            " kind = 'static'"
        )
    return StaticDiscovery(config.discovery.endpoints)


def _channel_factory(config: ClusterConfig, options: list[tuple[str, Any]]) -> ChannelFactory:
    """Channels to a cluster's endpoints: over TLS when the cluster has a `tls` table."""
    return lambda address: open_channel(address.target, config.tls, options)


class Balancer:
    """One balancer replica."""

    def __init__(
        self,
        config: BalancerConfig,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        discovery: DiscoveryFactory = static_discovery,
    ) -> None:
        self.config = config
        self.clock = clock
        self.started_at_unix_s = time.time()
        self._discovery = discovery
        for cluster_config in config.clusters:
            discovery(cluster_config)  # fails now, not in a background task, if it cannot work
        rng = rng or random.Random()
        self._rng = rng
        options = grpc_options(config.max_message_bytes)
        self.clusters = {
            c.name: Cluster(
                c,
                clock=clock,
                rng=rng,
                channel_factory=_channel_factory(c, options),
                on_change=self._state_changed,
                watch_connectivity=True,
            )
            for c in config.clusters
        }
        # Raises EngineUnavailable (the HAProxy binary is missing) before anything runs.
        self.engine: Engine = make_engine(config, self.clusters, clock=clock)
        for cluster in self.clusters.values():
            cluster.rebuild_listeners.append(self.engine.cluster_changed)
        self.listen_addresses: list[str] = []
        self.admin_address: str | None = None
        self.metrics_address: str | None = None
        self._engine_bound = False
        self._admin: AdminServer | None = None
        self.xds: XdsServer | None = None
        self.xds_address: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Binds the listeners, starts discovery and health checks, takes the control
        plane's desired state when one is configured, and only then serves: the
        listeners, then the admin API (whose health says SERVING).

        Raises ListenError when an address cannot be bound; nothing is left running then.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop(grace_s=0)
            raise

    async def _start(self) -> None:
        # Bound first, so a taken port fails at once; calls that connect meanwhile wait
        # in the backlog and are served once the desired state is held.
        self.listen_addresses.extend(self.engine.bind())
        self._engine_bound = True
        fetched = {name: asyncio.Event() for name in self.clusters}
        for cluster in self.clusters.values():
            self._tasks.extend(self._cluster_tasks(cluster, fetched[cluster.name]))
        await self._initial_fetch(fetched)
        if self.config.control_plane is not None:
            await self._hold_desired_state(self.config.control_plane)
        await self.engine.start()
        if self.config.admin.enabled:
            await self._start_admin()
        if self.config.xds is not None:
            await self._start_xds()
        log.info("balancer %s listening on %s", self.config.id, ", ".join(self.listen_addresses))

    async def _hold_desired_state(self, config: ControlPlaneConfig) -> None:
        # Imported here: only a replica with a control plane needs the HTTP client.
        from balancer.controlplane import hold_desired_state

        await hold_desired_state(config, self.clusters, rng=self._rng)

    async def _start_admin(self) -> None:
        # Imported here: the admin API brings generated code the data plane does not need.
        from balancer.admin.server import AdminServer

        self._admin = AdminServer(self, self.config.admin)
        await self._admin.start()
        self.admin_address = self._admin.address
        self.metrics_address = self._admin.metrics_address

    async def _start_xds(self) -> None:
        # Imported here: only a replica serving proxyless clients needs Envoy's types.
        from balancer.xds.server import XdsServer

        assert self.config.xds is not None
        self.xds = XdsServer(self.clusters, self.config.xds)
        await self.xds.start()
        self.xds_address = self.xds.address

    async def _initial_fetch(self, fetched: dict[str, asyncio.Event]) -> None:
        waits = [asyncio.wait_for(e.wait(), _INITIAL_FETCH_TIMEOUT_S) for e in fetched.values()]
        results = await asyncio.gather(*waits, return_exceptions=True)
        for name, result in zip(fetched, results, strict=True):
            if isinstance(result, TimeoutError):
                log.warning("cluster %s: no endpoints discovered yet; serving anyway", name)

    def _cluster_tasks(self, cluster: Cluster, fetched: asyncio.Event) -> list[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        coroutines: list[Coroutine[Any, Any, None]] = [
            self._watch(cluster, fetched),
            self._every(cluster.config.outlier_detection.interval_s, cluster.sweep_outliers),
            self._every(_SLOW_START_TICK_S, cluster.rebuild_if_ramping),
        ]
        if cluster.config.health_check.enabled:
            coroutines.append(HealthChecker(cluster, cluster.config.health_check).run())
        return [loop.create_task(c) for c in coroutines]

    async def _watch(self, cluster: Cluster, fetched: asyncio.Event) -> None:
        """Applies discovery updates; a failing discovery is retried with backoff, forever.

        Endpoints already known keep serving meanwhile: losing the platform's API
        must not take the data plane down.
        """
        failures = 0
        while True:
            try:
                async for update in self._discovery(cluster.config).watch():
                    cluster.apply(update)
                    fetched.set()
                    failures = 0
            except Exception:
                delay = _DISCOVERY_RETRY_S[min(failures, len(_DISCOVERY_RETRY_S) - 1)]
                log.exception("cluster %s: discovery failed; retrying in %gs", cluster.name, delay)
                failures += 1
                await asyncio.sleep(delay)
            else:
                return

    async def _every(self, interval_s: float, work: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            work()

    def _state_changed(self, cluster: Cluster, change: StateChange) -> None:
        self.engine.endpoint_changed(cluster, change)

    def connections_by_peer(self) -> Mapping[str, int]:
        """Client connections to the listeners, by peer IP."""
        return self.engine.connections_by_peer()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stops accepting calls, lets in-flight ones finish for `grace_s`, then cancels them."""
        grace_s = self.config.shutdown_grace_s if grace_s is None else grace_s
        if self._admin is not None:
            await self._admin.stop(grace_s=0.5)
        if self.xds is not None:
            await self.xds.stop(grace_s=0.5)
        if self._engine_bound:
            await self.engine.stop(grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(*(c.close() for c in self.clusters.values()))

    async def serve(self, shutdown_trigger: ShutdownTrigger) -> None:
        """Runs until `shutdown_trigger` returns, then stops gracefully."""
        await serve_until(self, shutdown_trigger)
