"""Turns cluster changes into snapshots: every change schedules one rebuild, debounced.

Every change of a cluster's endpoints, states, weights or policy ends in
`Cluster.rebuild`, whose listeners call `changed`. The first change starts a
timer of `debounce_s` (~50 ms); changes until it fires join it, so a burst of
endpoint changes becomes one push, at most `debounce_s` after the first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from balancer.cluster import Cluster
from balancer.xds.cache import SnapshotCache
from balancer.xds.resources import build_resources, fallback_policy_warning, unsendable

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_S = 0.05
# Warnings already given are remembered so they are given once; the memory is bounded.
_MAX_WARNED = 10_000


class Publisher:
    """Keeps the cache's default snapshot equal to the clusters' state: `start()`, `stop()`."""

    def __init__(
        self,
        clusters: Iterable[Cluster],
        cache: SnapshotCache,
        *,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
    ) -> None:
        self._clusters = list(clusters)
        self._cache = cache
        self._debounce_s = debounce_s
        self._timer: asyncio.TimerHandle | None = None
        self._warned: set[str] = set()
        self.pushes = 0

    def start(self) -> None:
        """Publishes the current state now and follows every cluster's rebuilds."""
        for cluster in self._clusters:
            cluster.rebuild_listeners.append(self.changed)
        self.publish()

    def stop(self) -> None:
        for cluster in self._clusters:
            if self.changed in cluster.rebuild_listeners:
                cluster.rebuild_listeners.remove(self.changed)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def changed(self, cluster: Cluster) -> None:
        """A cluster changed: publish within `debounce_s` (one push for a burst)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._debounce_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.publish()

    def publish(self) -> None:
        """Builds every resource from the clusters' state now and stores it in the cache."""
        self._warn_fallbacks()
        self._cache.set_snapshot(build_resources(self._clusters))
        self.pushes += 1

    def _warn_fallbacks(self) -> None:
        """One warning per cluster and policy that proxyless clients cannot follow, and per
        endpoint they cannot be sent."""
        for cluster in self._clusters:
            self._warn_once(f"{cluster.name}/{cluster.policy}", fallback_policy_warning(cluster))
            for endpoint_id in unsendable(cluster):
                address = cluster.endpoints[endpoint_id].address.target
                self._warn_once(
                    f"{cluster.name}//{endpoint_id}",
                    f"cluster {cluster.name}: endpoint {endpoint_id} ({address}) is left out for"
                    " proxyless clients: they need an IP address, not a host name; list it by IP",
                )

    def _warn_once(self, key: str, warning: str | None) -> None:
        if warning is not None and key not in self._warned and len(self._warned) < _MAX_WARNED:
            self._warned.add(key)
            log.warning("xds: %s", warning)
