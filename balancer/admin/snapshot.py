"""Reads a running Balancer into plain, immutable views: what snapshots and metrics show.

The gRPC snapshot and the Prometheus collector both present these views, so
the two cannot disagree. Reading is done at request (or scrape) time and
records nothing: the request path stays as cheap as `EndpointStats.record`.

Thread note: Prometheus scrapes from its own HTTP thread while the event loop
keeps changing endpoints and counters. So the reader copies every dict and list
before walking it (a dict changing size mid-iteration would raise) and reads
each value once. A view taken that way may lag a call or two, or count a call
in `requests` a moment before its latency; counters never go backwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from balancer.admin.explain import Explanation, explain_cluster, share_basis
from balancer.connections import client_local_addresses
from balancer.endpoint import Endpoint, State
from balancer.retries import RetryCounts
from balancer.stats import STATUS_CODES

if TYPE_CHECKING:
    from balancer.cluster import Cluster
    from balancer.server import Balancer
    from balancer.xds.lrs import ProxylessCounters
    from balancer.xds.status import XdsView

log = logging.getLogger(__name__)
WallClock = Callable[[], float]
# The upstream connections' local addresses are read from channelz at most this often,
# in a thread: the walk costs about 1.8 ms of CPU per endpoint (180 ms for 100 channels,
# measured), which must not stall the event loop that carries calls. The dashboard reads
# the pods every 5 s and keeps a socket it once matched, so a new connection is late
# by a read at most.
UPSTREAM_READ_S = 5.0


@dataclass(frozen=True, slots=True)
class RetryView:
    """Retry counters, cumulative: retried, then succeeded, budget spent, not safe."""

    retries: int = 0
    succeeded: int = 0
    budget_exhausted: int = 0
    not_safe: int = 0

    @classmethod
    def of(cls, counts: RetryCounts) -> RetryView:
        return cls(counts.retries, counts.succeeded, counts.budget_exhausted, counts.not_safe)

    def __add__(self, other: RetryView) -> RetryView:
        return RetryView(
            self.retries + other.retries,
            self.succeeded + other.succeeded,
            self.budget_exhausted + other.budget_exhausted,
            self.not_safe + other.not_safe,
        )


@dataclass(frozen=True, slots=True)
class EndpointView:
    endpoint_id: str
    address: str
    pod_name: str | None
    state: State
    state_since_unix_s: float
    # Set while DRAINING with a timeout.
    drain_deadline_unix_s: float | None
    removed: bool
    weight: int
    effective_weight: float
    in_flight: int
    # Finished calls per status code, indexed by the code's value (stats.STATUS_CODES).
    requests: tuple[int, ...]
    bytes_received: int
    bytes_sent: int
    # One count per stats.LATENCY_BOUNDS_MS bucket, then the +Inf bucket; not cumulative.
    latency_counts: tuple[int, ...]
    latency_sum_s: float
    ewma_latency_s: float
    consecutive_failures: int
    ejections_total: int
    ejection_multiplier: int
    state_reason: str
    # The channel's last connectivity state (grpc.ChannelConnectivity name).
    connectivity: str
    # With [xds]: calls proxyless clients reported (LRS), and what they are told of it.
    proxyless: ProxylessCounters | None = None
    xds_health_status: str = ""
    # The embedded proxy's retries of this endpoint's failures (see retries.RetryCounts).
    retries: RetryView = field(default_factory=lambda: RetryView())
    # Why it gets its share (`explain`): times in unix seconds.
    slow_start_factor: float = 1.0
    slow_start_ends_unix_s: float | None = None
    expected_share: float = 0.0
    load: float = 0.0
    fast_failure_load: float = 0.0
    latency_penalty: float = 1.0
    last_ejected_unix_s: float | None = None
    last_ejection_reason: str = ""
    # The local addresses of the upstream channel's connections to it (`Reader`).
    upstream_local_addresses: tuple[str, ...] = ()

    @property
    def requests_total(self) -> int:
        return sum(self.requests)

    def requests_by_code(self) -> dict[str, int]:
        """Non-zero counts keyed by status code name (`OK`, `UNAVAILABLE`, …)."""
        return {STATUS_CODES[i].name: n for i, n in enumerate(self.requests) if n}


@dataclass(frozen=True, slots=True)
class ClusterView:
    name: str
    policy: str
    endpoints: tuple[EndpointView, ...]
    # From the config file: what an endpoint or the cluster has without an operator's change.
    default_weight: int
    configured_policy: str
    # Below the panic threshold: calls go to every non-drained endpoint that can connect.
    panic: bool
    # With [xds]: clients subscribed to its endpoints, those in sync, and whether they
    # use weighted round robin instead of `policy`.
    xds_clients: int = 0
    xds_clients_in_sync: int = 0
    xds_policy_fallback: bool = False
    # The peers of the subscribed clients (their `XdsClientView.peer`).
    xds_client_peers: tuple[str, ...] = ()
    # Cumulative over every endpoint it had; and whether the retry budget is spent now.
    retries: RetryView = field(default_factory=lambda: RetryView())
    retry_budget_exhausted: bool = False
    # How the endpoints' expected shares follow from their weights under `policy`.
    share_basis: str = ""

    @property
    def requests_total(self) -> int:
        return sum(ep.requests_total for ep in self.endpoints)

    @property
    def in_flight(self) -> int:
        return sum(ep.in_flight for ep in self.endpoints)

    @property
    def ready_endpoints(self) -> int:
        return sum(1 for ep in self.endpoints if ep.state is State.READY)


@dataclass(frozen=True, slots=True)
class BalancerView:
    balancer_id: str
    taken_at_unix_s: float
    started_at_unix_s: float
    clusters: tuple[ClusterView, ...]
    # Client connections to the balancer's listeners: (peer IP, count), by peer.
    connections: tuple[tuple[str, int], ...]
    # The in-flight message bytes budget: refusals so far, and bytes held now.
    messages_over_budget_total: int = 0
    in_flight_message_bytes: int = 0
    # None without [xds].
    xds: XdsView | None = None
    # The engine carrying calls (embedded, haproxy), and whether it can carry them now.
    engine: str = "embedded"
    engine_up: bool = True
    # Whether `upstream_local_addresses` name every connection the engine holds to the
    # endpoints: only the embedded engine calls through the upstream channels.
    upstream_addresses_complete: bool = True

    @property
    def retries(self) -> RetryView:
        return sum((c.retries for c in self.clusters), RetryView())


@dataclass(frozen=True, slots=True)
class _Now:
    """One instant on both clocks, to turn the balancer's clock readings into unix time."""

    clock_s: float
    unix_s: float

    def unix(self, clock_s: float) -> float:
        return self.unix_s - (self.clock_s - clock_s)

    def maybe_unix(self, clock_s: float | None) -> float | None:
        return None if clock_s is None else self.unix(clock_s)


class Reader:
    """Takes views of one balancer.

    Times in views are unix seconds: the balancer's own clock (monotonic, or a
    test's fake) is mapped through `wall_clock` at the moment of reading.
    """

    def __init__(self, balancer: Balancer, *, wall_clock: WallClock = time.time) -> None:
        self._balancer = balancer
        self._wall_clock = wall_clock
        # The upstream connections' local addresses by target, and when a read started.
        self._upstream: Mapping[str, tuple[str, ...]] = {}
        self._upstream_read_s: float | None = None
        self._reading = threading.Lock()

    def upstream_addresses(self) -> Mapping[str, tuple[str, ...]]:
        """The local addresses of this process's client connections by target, as the last
        channelz read found them (empty before the first ends). A read starts, in a thread
        of its own, when the last one is UPSTREAM_READ_S old and none runs: this returns at
        once, so a snapshot never waits for it."""
        now_s = self._balancer.clock()
        due = self._upstream_read_s is None or now_s - self._upstream_read_s >= UPSTREAM_READ_S
        if due and self._reading.acquire(blocking=False):
            self._upstream_read_s = now_s
            threading.Thread(
                target=self._read_upstream, name="upstream sockets", daemon=True
            ).start()
        return self._upstream

    def _read_upstream(self) -> None:
        try:
            self._upstream = client_local_addresses()
        except Exception:  # channelz is a diagnosis: it must never break snapshots
            log.exception("reading the upstream connections from channelz failed")
        finally:
            self._reading.release()

    def balancer(self, clusters: Iterable[Cluster] | None = None) -> BalancerView:
        """The whole balancer, or only `clusters` of it; connections are always included."""
        now = self._now()
        figures = self._balancer.engine.figures()
        chosen = list(self._balancer.clusters.values()) if clusters is None else list(clusters)
        return BalancerView(
            balancer_id=self._balancer.config.id,
            taken_at_unix_s=now.unix_s,
            started_at_unix_s=self._balancer.started_at_unix_s,
            clusters=tuple(self._cluster(c, now, figures.in_flight) for c in chosen),
            connections=tuple(sorted(self._balancer.connections_by_peer().items())),
            messages_over_budget_total=figures.messages_over_budget_total,
            in_flight_message_bytes=figures.in_flight_message_bytes,
            engine=figures.name,
            engine_up=figures.up,
            # The embedded engine calls through the upstream channels; another engine
            # (HAProxy) holds connections of its own that channelz here cannot see.
            upstream_addresses_complete=figures.name == "embedded",
            xds=None if self._balancer.xds is None else self._balancer.xds.status(),
        )

    def cluster(self, cluster: Cluster) -> ClusterView:
        return self._cluster(cluster, self._now(), self._balancer.engine.figures().in_flight)

    def endpoint(self, ep: Endpoint) -> EndpointView:
        in_flight = self._balancer.engine.figures().in_flight
        cluster = next(
            (c for c in self._balancer.clusters.values() if c.endpoints.get(ep.id) is ep), None
        )
        name = None if cluster is None else cluster.name
        now = self._now()
        why = None if cluster is None else explain_cluster(cluster, now.clock_s).get(ep.id)
        return self._endpoint(ep, now, name, in_flight.get((name or "", ep.id)), why)

    def _now(self) -> _Now:
        return _Now(clock_s=self._balancer.clock(), unix_s=self._wall_clock())

    def _cluster(
        self, cluster: Cluster, now: _Now, in_flight: Mapping[tuple[str, str], int]
    ) -> ClusterView:
        endpoints = list(cluster.endpoints.values())  # copied: see the thread note above
        why = explain_cluster(cluster, now.clock_s)
        xds = self._balancer.xds
        subscribed, in_sync = (0, 0) if xds is None else xds.cluster_sync(cluster.name)
        return ClusterView(
            name=cluster.name,
            policy=cluster.policy,
            endpoints=tuple(
                self._endpoint(
                    ep, now, cluster.name, in_flight.get((cluster.name, ep.id)), why.get(ep.id)
                )
                for ep in endpoints
            ),
            default_weight=cluster.config.default_weight,
            configured_policy=cluster.config.policy,
            panic=cluster.panic,
            xds_clients=subscribed,
            xds_clients_in_sync=in_sync,
            xds_policy_fallback=xds is not None and xds.policy_fallback(cluster),
            xds_client_peers=() if xds is None else xds.cluster_peers(cluster.name),
            retries=RetryView.of(cluster.retries.counts),
            retry_budget_exhausted=cluster.retries.exhausted_now(),
            share_basis=share_basis(cluster.policy),
        )

    def _endpoint(
        self,
        ep: Endpoint,
        now: _Now,
        cluster: str | None = None,
        in_flight: int | None = None,
        why: Explanation | None = None,
    ) -> EndpointView:
        """`in_flight`: the engine's count, when the endpoint's own does not see the calls;
        `why`: its explanation (`explain_cluster`), when it belongs to a cluster."""
        stats = ep.stats
        xds = self._balancer.xds if cluster is not None else None
        deadline = ep.drain_deadline_s if ep.state is State.DRAINING else None
        return EndpointView(
            endpoint_id=ep.id,
            address=ep.address.target,
            pod_name=ep.address.pod_name,
            state=ep.state,
            state_since_unix_s=now.unix(ep.state_since_s),
            drain_deadline_unix_s=None if deadline is None else now.unix(deadline),
            removed=ep.removed,
            weight=ep.weight,
            effective_weight=ep.effective_weight,
            in_flight=ep.in_flight if in_flight is None else in_flight,
            requests=tuple(stats.requests),
            bytes_received=stats.bytes_received,
            bytes_sent=stats.bytes_sent,
            latency_counts=tuple(stats.latency_counts),
            latency_sum_s=stats.latency_sum_s,
            ewma_latency_s=ep.ewma.estimate_s(now.clock_s),
            consecutive_failures=ep.consecutive_failures,
            ejections_total=ep.ejections_total,
            ejection_multiplier=ep.times_ejected,
            state_reason=ep.state_reason,
            connectivity=ep.connectivity,
            proxyless=None if xds is None else xds.proxyless(cluster or "", ep.id),
            xds_health_status="" if xds is None else xds.endpoint_health(ep),
            retries=RetryView.of(ep.retries),
            upstream_local_addresses=self.upstream_addresses().get(ep.address.target, ()),
            **_why_fields(why, now),
        )


def _why_fields(why: Explanation | None, now: _Now) -> dict[str, Any]:
    if why is None:
        return {}
    return {
        "slow_start_factor": why.slow_start_factor,
        "slow_start_ends_unix_s": now.maybe_unix(why.slow_start_ends_s),
        "expected_share": why.expected_share,
        "load": why.load,
        "fast_failure_load": why.fast_failure_load,
        "latency_penalty": why.latency_penalty,
        "last_ejected_unix_s": now.maybe_unix(why.last_ejected_s),
        "last_ejection_reason": why.last_ejection_reason,
    }
