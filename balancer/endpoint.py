"""An upstream endpoint: identity, state machine, weight, load and stats.

States follow DESIGN.md::

    PENDING → READY ⇄ UNHEALTHY
    READY → EJECTED → READY            (outlier detection)
    any → DRAINING → DRAINED           (operator drain; in-flight calls finish)
    DRAINING / DRAINED → READY         (undrain)

Beyond DESIGN.md, three moves keep health honest: PENDING → UNHEALTHY (the
first checks fail), EJECTED → UNHEALTHY (checks fail while ejected), and
DRAINING / DRAINED → UNHEALTHY (undrain of an endpoint whose health fails:
it must not get requests just because the operator is done with it).

`Endpoint.transition` is the one place that changes state; an illegal
transition raises `IllegalTransition`. Whether a serving endpoint is READY or
UNHEALTHY follows two signals, both kept on the endpoint: `healthy` (health
checks, or discovery's readiness without them) and `reachable` (false while its
channel is in TRANSIENT_FAILURE: the connection is refused or lost).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from balancer.load import FailureLoad, PeakEwma
from balancer.retries import RetryCounts
from balancer.stats import EndpointStats

if TYPE_CHECKING:
    import grpc.aio

MIN_WEIGHT = 0
MAX_WEIGHT = 10_000
DEFAULT_WEIGHT = 100


class InFlight(Protocol):
    """A call in flight on an endpoint, as its engine holds it: a drain timeout cancels it.

    The embedded engine holds its upstream grpc.aio calls; the HAProxy engine one
    stand-in for all of HAProxy's sessions on the server while they drain.
    """

    def cancel(self) -> bool: ...


class State(enum.Enum):
    PENDING = "PENDING"
    READY = "READY"
    UNHEALTHY = "UNHEALTHY"
    EJECTED = "EJECTED"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"


_ALLOWED: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.READY, State.UNHEALTHY, State.DRAINING}),
    State.READY: frozenset({State.UNHEALTHY, State.EJECTED, State.DRAINING}),
    State.UNHEALTHY: frozenset({State.READY, State.DRAINING}),
    State.EJECTED: frozenset({State.READY, State.UNHEALTHY, State.DRAINING}),
    State.DRAINING: frozenset({State.DRAINED, State.READY, State.UNHEALTHY}),
    State.DRAINED: frozenset({State.READY, State.UNHEALTHY, State.DRAINING}),
}


class IllegalTransition(ValueError):
    """Raised when an endpoint is asked to move to a state it cannot reach."""


def check_weight(weight: int) -> int:
    """Returns `weight` when it is an int in [0, 10000]; raises ValueError otherwise."""
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise ValueError(f"weight must be an integer, got {weight!r}")
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight {weight} is out of range: use {MIN_WEIGHT} to {MAX_WEIGHT}")
    return weight


@dataclass(frozen=True)
class Address:
    """What discovery knows of an endpoint. `endpoint_id` is the pod name when known.

    `ready` is discovery's own word (a Kubernetes `ready` condition): an address
    that is not ready is kept but gets no requests. `terminating` (a Kubernetes
    endpoint's `terminating` condition): the pod is going away; the cluster drains
    it (no new requests, in-flight calls and streams finish) until discovery removes it.
    """

    host: str
    port: int
    pod_name: str | None = None
    ready: bool = True
    terminating: bool = False

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def endpoint_id(self) -> str:
        return self.pod_name or self.target


@dataclass(frozen=True)
class StateChange:
    endpoint_id: str
    old: State
    new: State
    reason: str


class Endpoint:
    """One upstream. Owned by its cluster; the proxy calls `begin`/`finish` around calls."""

    def __init__(
        self,
        address: Address,
        *,
        weight: int,
        now_s: float,
        ewma: PeakEwma,
        stats: EndpointStats,
        on_change: Callable[[Endpoint, StateChange], None],
        failure_load: FailureLoad | None = None,
    ) -> None:
        self.address = address
        self.id = address.endpoint_id
        self.state = State.PENDING
        self.weight = check_weight(weight)
        # Weight the picker uses: `weight` scaled by slow start; set by the cluster.
        self.effective_weight = float(self.weight)
        self.ready_since_s: float | None = None
        self.state_since_s = now_s
        # Why the endpoint is in its state, in words an operator can act on.
        self.state_reason = "discovered"
        self.ewma = ewma
        # Recent fast failures, as load for least_request (linkerd's load biaser).
        self.failure_load = failure_load or FailureLoad(penalty_s=0.0, now_s=now_s)
        self.stats = stats
        # Its failures retried elsewhere (or not: budget spent, not safe), cumulative.
        self.retries = RetryCounts()
        # Upstream calls in flight, so a drain timeout can cancel them.
        self.calls: set[InFlight] = set()
        self.channel: grpc.aio.Channel | None = None
        # Multicallables per method, so the unary hot path does not build one per call.
        self.unary_callables: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self.consecutive_failures = 0
        # Envoy's ejection multiplier: grows per ejection, shrinks per clean interval.
        self.times_ejected = 0
        self.ejections_total = 0
        self.ejected_until_s = 0.0
        # The last ejection, kept after it ends: the "why" of the admin API shows it.
        self.last_ejected_s: float | None = None
        self.last_ejection_reason = ""
        # The last word of health checks or discovery, kept while drained for undrain.
        self.healthy = False
        # False while the channel is in TRANSIENT_FAILURE; only READY makes it true again.
        self.reachable = True
        # The channel's last connectivity state seen (grpc.ChannelConnectivity name).
        self.connectivity = "IDLE"
        # Follows the channel's connectivity while the endpoint exists (Cluster starts it).
        self.connectivity_task: asyncio.Task[None] | None = None
        self.drain_deadline_s: float | None = None
        self.drain_timer: asyncio.TimerHandle | None = None
        self.drain_timed_out = False
        self.removed = False
        self._on_change = on_change

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r}, {self.state.value}, weight={self.weight})"

    @property
    def in_flight(self) -> int:
        return len(self.calls)

    def transition(self, new: State, reason: str, now_s: float) -> None:
        """Moves to `new`; raises IllegalTransition if DESIGN.md does not allow it."""
        old = self.state
        if new is old:
            return
        if new not in _ALLOWED[old]:
            raise IllegalTransition(
                f"endpoint {self.id}: cannot go from {old.value} to {new.value} ({reason})"
            )
        self.state = new
        self.state_since_s = now_s
        self.state_reason = reason
        if new is State.READY:
            self.ready_since_s = now_s
        if old is State.DRAINING:
            self.cancel_drain_timer()
        if old in (State.DRAINING, State.DRAINED) and new is not State.DRAINED:
            self.drain_deadline_s = None
            self.drain_timed_out = False
        self._on_change(self, StateChange(self.id, old, new, reason))

    def cancel_drain_timer(self) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None

    def begin(self, call: InFlight) -> None:
        self.calls.add(call)

    def finish(self, call: InFlight, now_s: float) -> None:
        self.calls.discard(call)
        if self.state is State.DRAINING and not self.calls:
            self.transition(State.DRAINED, "no calls in flight", now_s)
