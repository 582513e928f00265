"""The xDS server: ADS and LRS on its own port, fed from the balancer's clusters.

Proxyless gRPC clients (any language, `xds:///<cluster>` targets, a bootstrap
file naming this server) get the same endpoint states the proxy uses and
balance every call themselves: no hop. Composed by the balancer process; it
reads cluster state only and never touches the proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
import grpc.aio
from envoy.config.core.v3 import health_check_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.load_stats.v3 import lrs_pb2_grpc

from balancer.admin.auth import TokenAuth
from balancer.cluster import Cluster
from balancer.config import XdsConfig
from balancer.endpoint import Endpoint
from balancer.server import bind
from balancer.xds.ads import AdsService, ClientStatus
from balancer.xds.cache import SnapshotCache
from balancer.xds.lrs import LoadStore, LrsService, ProxylessCounters
from balancer.xds.publisher import DEFAULT_DEBOUNCE_S, Publisher
from balancer.xds.resources import ENDPOINT, Snapshot, fallback_policy_warning, health_status
from balancer.xds.status import XdsView, client_view, versions

log = logging.getLogger(__name__)


class XdsServer:
    """Serves ADS for `clusters` as `config` says: `start()`, then `stop()`.

    After `start`, `address` is the bound `host:port` (the real port when the
    config says 0).
    """

    def __init__(
        self,
        clusters: Mapping[str, Cluster],
        config: XdsConfig,
        *,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
    ) -> None:
        self._config = config
        self.cache = SnapshotCache()
        self.publisher = Publisher(clusters.values(), self.cache, debounce_s=debounce_s)
        self.ads = AdsService(self.cache)
        self.loads = LoadStore(clusters)
        self._lrs = LrsService(self.loads, interval_s=config.load_report_interval_s)
        self._server: grpc.aio.Server | None = None
        self.address: str | None = None

    async def start(self) -> None:
        """Publishes the clusters' state, binds and serves; raises ListenError when it cannot."""
        interceptors = [] if self._config.token is None else [TokenAuth(self._config.token)]
        server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.ads, server)
        lrs_pb2_grpc.add_LoadReportingServiceServicer_to_server(self._lrs, server)
        self.address = bind(server, self._config.address, "xDS server", self._config.tls)
        self.publisher.start()
        await server.start()
        self._server = server
        log.info(
            "xDS server on %s%s%s",
            self.address,
            "" if self._config.tls is None else " (TLS)",
            "" if self._config.token is None else " (bearer token)",
        )

    def snapshot(self) -> Snapshot:
        """The resources every client is being given now."""
        return self.cache.snapshot("")

    def clients(self) -> list[ClientStatus]:
        """The connected clients: node id, peer, and per type what they ACKed or NACKed."""
        return list(self.ads.clients.values())

    def status(self) -> XdsView:
        """The server as the admin snapshot shows it."""
        snapshot = self.snapshot()
        return XdsView(
            address=self.address or "",
            clients=tuple(client_view(c, snapshot) for c in self.clients()),
            pushes_total=self.publisher.pushes,
            versions=versions(snapshot),
        )

    def cluster_sync(self, cluster: str) -> tuple[int, int]:
        """(clients subscribed to the cluster's endpoints, those that ACKed what is served)."""
        version = self.snapshot().version(ENDPOINT)
        subscribed = [c.types[ENDPOINT] for c in self._subscribed(cluster)]
        return len(subscribed), sum(1 for s in subscribed if s.acked_version == version)

    def cluster_peers(self, cluster: str) -> tuple[str, ...]:
        """The peers of the clients subscribed to the cluster's endpoints, sorted."""
        return tuple(sorted(c.peer for c in self._subscribed(cluster)))

    def _subscribed(self, cluster: str) -> list[ClientStatus]:
        return [
            client
            for client in self.clients()
            if (status := client.types.get(ENDPOINT)) is not None and cluster in status.names
        ]

    def policy_fallback(self, cluster: Cluster) -> bool:
        """True when proxyless clients use weighted round robin instead of its policy."""
        return fallback_policy_warning(cluster) is not None

    def endpoint_health(self, ep: Endpoint) -> str:
        """What proxyless clients are told of `ep`: HEALTHY, DRAINING or UNHEALTHY."""
        return str(health_check_pb2.HealthStatus.Name(health_status(ep)))

    def proxyless(self, cluster: str, endpoint_id: str) -> ProxylessCounters:
        return self.loads.counters(cluster, endpoint_id)

    async def stop(self, grace_s: float = 0.5) -> None:
        self.publisher.stop()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
