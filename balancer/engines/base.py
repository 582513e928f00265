"""The seam between the cluster state and the engine that carries calls.

The cluster state (`balancer.cluster`: discovery, health, outliers, drain,
weights, slow start, policy) decides *where* calls may go; an engine carries
them there. The process entry point builds the clusters, then one engine over
them, and forwards every cluster notification to it. An engine reads clusters
and endpoints through their public attributes only and changes them only
through their methods (`Endpoint.begin`/`finish`, `Cluster.record_result`);
the clusters never know which engine runs.

Two engines exist: `embedded` (the grpc.aio proxy, in-process, every feature)
and `haproxy` (a supervised HAProxy child driven over its runtime API).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from balancer.cluster import Cluster
    from balancer.endpoint import StateChange


class EngineUnavailable(RuntimeError):
    """The engine cannot run on this machine (its binary is missing); the message says
    what to install or configure."""


@dataclass(frozen=True, slots=True)
class EngineFigures:
    """What the engine itself holds, for the admin snapshot.

    `up` is False while the engine cannot carry calls (HAProxy died and is being
    restarted); the embedded engine is up while it runs.
    """

    name: str
    up: bool = True
    messages_over_budget_total: int = 0
    in_flight_message_bytes: int = 0
    # Calls in flight per (cluster, endpoint id) as the engine counts them, where the
    # endpoints' own count (`Endpoint.in_flight`) does not see them (HAProxy's streams).
    in_flight: Mapping[tuple[str, str], int] = field(default_factory=dict)


class Engine(Protocol):
    """Carries calls for a set of clusters. Lifecycle: `bind`, `start`, `stop`, once each."""

    name: str

    def bind(self) -> Sequence[str]:
        """Takes the listeners' addresses (port 0 → a chosen port) and returns them as
        `host:port`; raises ListenError when one cannot be bound. Calls are not carried yet."""
        ...

    async def start(self) -> None:
        """Begins carrying calls on the bound listeners."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stops accepting calls, gives in-flight ones `grace_s`, then ends them."""
        ...

    def cluster_changed(self, cluster: Cluster) -> None:
        """The cluster's membership, a state, a weight (slow start included) or its policy
        changed. Called synchronously from the cluster; must not block."""
        ...

    def endpoint_changed(self, cluster: Cluster, change: StateChange) -> None:
        """One endpoint changed state (after `cluster_changed`). Called synchronously: an
        engine that must hold a DRAINING endpoint open registers its hold here."""
        ...

    def connections_by_peer(self) -> Mapping[str, int]:
        """Client connections to the listeners, by peer IP (empty when unknown)."""
        ...

    def figures(self) -> EngineFigures:
        """The engine's own figures, read at snapshot time."""
        ...
