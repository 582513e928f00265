"""A cluster: its endpoint set, the picker over it, and the operator's controls.

Membership comes from discovery (`apply`); states change through
`Endpoint.transition`, and every change rebuilds the picker, so a drained or
ejected endpoint gets no new request from the moment the change is made.

Two signals decide whether a serving endpoint is READY or UNHEALTHY (`_settle`):
health checks (or discovery's readiness without them) and its channel's
connectivity, which a gRPC client uses too: a channel in TRANSIENT_FAILURE
(connection refused or lost) takes the endpoint out at once, and READY again
puts it back. Below the panic threshold (Envoy's) the picker spreads calls over
every non-drained endpoint that can connect rather than fail them all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping

import grpc
import grpc.aio

from balancer.config import ClusterConfig
from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address, Endpoint, State, StateChange, check_weight
from balancer.load import FailureLoad, PeakEwma
from balancer.picker import POLICIES, Picker, build_picker
from balancer.retries import ClusterRetries
from balancer.stats import CODE_INDEX, EndpointStats

log = logging.getLogger(__name__)

Clock = Callable[[], float]
ChannelFactory = Callable[[Address], grpc.aio.Channel]
ConnectivityReport = Callable[[grpc.ChannelConnectivity], None]

UNREACHABLE_REASON = "cannot connect: channel in TRANSIENT_FAILURE (connection refused or lost)"
_SERVING = (State.PENDING, State.READY, State.EJECTED)
# Endpoints the panic threshold counts: health is known, and no drain set them aside.
_JUDGED = (State.READY, State.EJECTED, State.UNHEALTHY)


class UnknownEndpoint(KeyError):
    """No endpoint with that id in the cluster."""

    def __str__(self) -> str:
        return str(self.args[0])


class Cluster:
    """The endpoints of one upstream service and how requests are spread over them."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        clock: Clock,
        rng: random.Random,
        channel_factory: ChannelFactory,
        on_change: Callable[[Cluster, StateChange], None] | None = None,
        watch_connectivity: bool = False,
    ) -> None:
        """`watch_connectivity`: follow each endpoint's channel state (needs real
        grpc.aio channels and a running loop when endpoints are added)."""
        self.config = config
        self.name = config.name
        self.policy = config.policy
        self.endpoints: dict[str, Endpoint] = {}
        self.unary_methods: set[str] = set(config.unary_methods)
        self._clock = clock
        self.clock = clock
        self._rng = rng
        self._channel_factory = channel_factory
        self._on_change = on_change
        self._failure_codes = frozenset(
            CODE_INDEX[grpc.StatusCode[name]] for name in config.outlier_detection.failure_codes
        )
        self._penalty_codes = frozenset(
            CODE_INDEX[c] for c in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        )
        self._penalty_s = config.peak_ewma.failure_penalty_ms / 1000
        self._picker: Picker = build_picker(self.policy, [], rng)
        self._routable: list[Endpoint] = []
        # The retry policy, budget and counters (the embedded proxy retries; see retries.py).
        self.retries = ClusterRetries.make(config.retry, clock)
        self._closing: set[asyncio.Task[None]] = set()
        self._watch_connectivity = watch_connectivity
        # True while fewer than panic_threshold_percent of the endpoints are READY.
        self.panic = False
        # Told after every rebuild: membership, a state, a weight (slow start's included) or
        # the policy changed. The engine and the xDS server's publisher follow the cluster.
        self.rebuild_listeners: list[Callable[[Cluster], None]] = []
        # Slow start's factor per READY endpoint inside its window, as the last rebuild
        # set it (read-only, for the admin API's "why"; absent: full weight).
        self.slow_start_factors: Mapping[str, float] = {}

    # --- picking (hot path) ---------------------------------------------------------------

    def pick(self) -> Endpoint | None:
        """The endpoint for a new request or stream; None when no endpoint can take it."""
        return self._picker.pick(self._clock())

    def pick_other(self, last: Endpoint) -> Endpoint | None:
        """The endpoint for a retry: never `last` again while another can take calls."""
        now = self._clock()
        ep = self._picker.pick(now)
        for _ in range(2):
            if ep is not last:
                return ep
            ep = self._picker.pick(now)
        others = [e for e in self._routable if e is not last]
        return self._rng.choice(others) if others else ep

    def record_result(
        self, ep: Endpoint, code_index: int, latency_s: float, now_s: float | None = None
    ) -> None:
        """Feeds one finished call to the load estimate and outlier detection.

        `now_s` is the cluster clock's time, when the caller has just read it.
        """
        now = self._clock() if now_s is None else now_s
        if code_index in self._penalty_codes:
            # A fast failure must not look like a fast pod (linkerd's load biaser).
            ep.ewma.observe(max(latency_s, self._penalty_s), now, failure=True)
            ep.failure_load.add(now)
        else:
            ep.ewma.observe(latency_s, now)
        if code_index in self._failure_codes:
            ep.consecutive_failures += 1
            if ep.consecutive_failures >= self.config.outlier_detection.consecutive_failures:
                self._maybe_eject(ep, now)
        elif ep.consecutive_failures:
            ep.consecutive_failures = 0

    def no_endpoint_reason(self) -> str:
        """Why `pick` returned None, in words an operator can act on."""
        if not self.endpoints:
            return f"cluster {self.name!r} has no endpoints: discovery found none"
        states = Counter(ep.state.value for ep in self.endpoints.values())
        if states.get(State.READY.value):
            return f"cluster {self.name!r}: every READY endpoint has weight 0"
        if len(states) == 1:
            (state, count), = states.items()  # fmt: skip
            return f"cluster {self.name!r} has no READY endpoint: all {count} are {state}"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        return f"cluster {self.name!r} has no READY endpoint ({parts})"

    # --- membership -------------------------------------------------------------------------

    def apply(self, update: Update) -> None:
        """Applies one discovery update to the endpoint set."""
        if isinstance(update, Reset):
            wanted = {a.endpoint_id for a in update.addresses}
            for endpoint_id in [i for i in self.endpoints if i not in wanted]:
                self._remove(endpoint_id)
            self._add(update.addresses)
        elif isinstance(update, Add):
            self._add(update.addresses)
        elif isinstance(update, Remove):
            for endpoint_id in update.endpoint_ids:
                self._remove(endpoint_id)
            self.rebuild()  # a DRAINED endpoint is forgotten without a state change

    def _add(self, addresses: tuple[Address, ...]) -> None:
        for address in addresses:
            ep = self.endpoints.get(address.endpoint_id)
            if ep is None or ep.removed or ep.address.target != address.target:
                if ep is not None:
                    self._remove(ep.id)
                ep = self._new_endpoint(address)
            ep.address = address
            self._follow_discovery(ep)
        self.rebuild()

    def _new_endpoint(self, address: Address) -> Endpoint:
        now = self._clock()
        ewma_config = self.config.peak_ewma
        ep = Endpoint(
            address,
            weight=self.config.default_weight,
            now_s=now,
            ewma=PeakEwma(
                default_rtt_ms=ewma_config.default_rtt_ms,
                decay_s=ewma_config.decay_s,
                now_s=now,
                peak_decay_s=ewma_config.peak_decay_s,
                outlier_cap=ewma_config.outlier_cap,
            ),
            stats=EndpointStats(),
            on_change=self._changed,
            failure_load=FailureLoad(penalty_s=self._penalty_s, now_s=now),
        )
        ep.channel = self._channel_factory(address)
        if self._watch_connectivity:
            report = functools.partial(self.set_connectivity, ep)
            ep.connectivity_task = asyncio.get_running_loop().create_task(
                follow_connectivity(ep.channel, report)
            )
        self.endpoints[ep.id] = ep
        log.info("cluster %s: endpoint %s added (%s)", self.name, ep.id, address.target)
        return ep

    def _follow_discovery(self, ep: Endpoint) -> None:
        """Without active health checks, discovery's readiness is the endpoint's health.

        A terminating endpoint (Kubernetes: the pod is being deleted) is drained
        whatever its health: no new requests, in-flight calls and streams finish, and
        discovery's Remove forgets it once the pod is gone.
        """
        if not self.config.health_check.enabled:
            if ep.address.ready:
                self.set_healthy(ep, "discovered ready")
            else:
                self.set_unhealthy(ep, "discovery reports not ready")
        if ep.address.terminating and ep.state not in (State.DRAINING, State.DRAINED):
            now = self._clock()
            ep.transition(State.DRAINING, "terminating (discovery)", now)
            if not ep.calls:
                ep.transition(State.DRAINED, "no calls in flight", now)

    def _remove(self, endpoint_id: str) -> None:
        ep = self.endpoints.get(endpoint_id)
        if ep is None or ep.removed:
            return
        ep.removed = True
        if ep.state not in (State.DRAINING, State.DRAINED):
            ep.transition(State.DRAINING, "removed by discovery", self._clock())
        if ep.state is State.DRAINING and not ep.calls:
            ep.transition(State.DRAINED, "no calls in flight", self._clock())
        elif ep.state is State.DRAINED:
            self._forget(ep)

    def _forget(self, ep: Endpoint) -> None:
        if self.endpoints.get(ep.id) is ep:
            del self.endpoints[ep.id]
        ep.cancel_drain_timer()
        if ep.connectivity_task is not None:
            ep.connectivity_task.cancel()
        if ep.channel is not None:
            task = asyncio.get_running_loop().create_task(ep.channel.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("cluster %s: endpoint %s removed", self.name, ep.id)

    def _changed(self, ep: Endpoint, change: StateChange) -> None:
        log.info(
            "cluster %s: endpoint %s %s → %s (%s)",
            self.name, ep.id, change.old.value, change.new.value, change.reason,
        )  # fmt: skip
        if change.new is State.DRAINED and ep.removed:
            self._forget(ep)
        self.rebuild()
        if self._on_change is not None:
            self._on_change(self, change)

    # --- health -----------------------------------------------------------------------------

    def set_healthy(self, ep: Endpoint, reason: str) -> None:
        """Health passed: PENDING or UNHEALTHY endpoints become READY if they can connect."""
        ep.healthy = True
        self._settle(ep, reason)

    def set_unhealthy(self, ep: Endpoint, reason: str) -> None:
        """Health failed: serving or waiting endpoints become UNHEALTHY; drains are left alone."""
        ep.healthy = False
        self._settle(ep, reason)

    def set_connectivity(self, ep: Endpoint, connectivity: grpc.ChannelConnectivity) -> None:
        """The endpoint's channel changed state, as a gRPC client's picker sees it.

        TRANSIENT_FAILURE (refused, reset, unreachable) takes the endpoint out at
        once; READY puts it back (if health allows). IDLE and CONNECTING change
        nothing: a channel reconnecting after a failure stays out until it connects.
        """
        ep.connectivity = connectivity.name
        if connectivity is grpc.ChannelConnectivity.TRANSIENT_FAILURE and ep.reachable:
            ep.reachable = False
            self._settle(ep, UNREACHABLE_REASON)
        elif connectivity is grpc.ChannelConnectivity.READY and not ep.reachable:
            ep.reachable = True
            self._settle(ep, "connected again (channel READY)")
        else:
            return
        self.rebuild()  # in panic, reachability alone decides whether it is picked

    def _settle(self, ep: Endpoint, reason: str) -> None:
        """READY when health and connectivity both allow it, else UNHEALTHY.

        Only PENDING, READY, EJECTED (towards UNHEALTHY) and UNHEALTHY (towards
        READY) move: a drain is the operator's, and an ejection ends by its timer.
        """
        if ep.healthy and ep.reachable:
            if ep.state in (State.PENDING, State.UNHEALTHY):
                ep.transition(State.READY, reason, self._clock())
        elif ep.state in _SERVING:
            why = reason if not ep.healthy else UNREACHABLE_REASON
            ep.transition(State.UNHEALTHY, why, self._clock())

    def _maybe_eject(self, ep: Endpoint, now: float) -> None:
        config = self.config.outlier_detection
        if not config.enabled or ep.state is not State.READY:
            return
        ejected = sum(1 for e in self.endpoints.values() if e.state is State.EJECTED)
        # Envoy: at most max_ejection_percent of the endpoints, but always allow one.
        if ejected >= max(1, int(len(self.endpoints) * config.max_ejection_percent / 100)):
            return
        ep.times_ejected += 1
        ep.ejections_total += 1
        duration = min(config.base_ejection_s * ep.times_ejected, config.max_ejection_s)
        ep.ejected_until_s = now + duration
        reason = f"{ep.consecutive_failures} consecutive failures; ejected for {duration:g} s"
        ep.last_ejected_s, ep.last_ejection_reason = now, reason
        ep.transition(State.EJECTED, reason, now)
        ep.consecutive_failures = 0

    def sweep_outliers(self) -> None:
        """The outlier interval's work: return endpoints whose ejection ran out.

        An endpoint that stayed READY through an interval without failures has its
        ejection multiplier lowered by one (Envoy), so an old ejection is forgiven.
        """
        now = self._clock()
        for ep in list(self.endpoints.values()):
            if ep.state is State.EJECTED and now >= ep.ejected_until_s:
                ep.transition(State.READY, "ejection time elapsed", now)
            elif ep.state is State.READY and ep.times_ejected and not ep.consecutive_failures:
                ep.times_ejected -= 1

    # --- operator controls ------------------------------------------------------------------

    def get(self, endpoint_id: str) -> Endpoint:
        """The endpoint with that id; raises UnknownEndpoint naming the ones that exist."""
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            known = ", ".join(sorted(self.endpoints)) or "none"
            raise UnknownEndpoint(
                f"cluster {self.name!r} has no endpoint {endpoint_id!r} (endpoints: {known})"
            )
        return ep

    def set_weight(self, endpoint_id: str, weight: int) -> Endpoint:
        ep = self.get(endpoint_id)
        ep.weight = check_weight(weight)
        self.rebuild()
        return ep

    def set_policy(self, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is unknown: use one of {', '.join(POLICIES)}")
        self.policy = policy
        self.rebuild()

    def drain(self, endpoint_id: str, timeout_s: float | None = None) -> Endpoint:
        """Stops new requests to the endpoint at once; in-flight calls finish.

        The endpoint is DRAINED when its last call ends. With a timeout, calls
        still running when it expires are cancelled (clients get UNAVAILABLE).
        Draining a draining or drained endpoint changes nothing but the timeout.
        """
        ep = self.get(endpoint_id)
        now = self._clock()
        if ep.state is not State.DRAINING and ep.state is not State.DRAINED:
            ep.transition(State.DRAINING, "drained by operator", now)
        if ep.state is State.DRAINING and not ep.calls:
            ep.transition(State.DRAINED, "no calls in flight", now)
        timeout_s = timeout_s if timeout_s is not None else self.config.drain_timeout_s
        if ep.state is State.DRAINING and timeout_s is not None:
            self._set_drain_timer(ep, now, timeout_s)
        return ep

    def _set_drain_timer(self, ep: Endpoint, now: float, timeout_s: float) -> None:
        ep.cancel_drain_timer()
        ep.drain_deadline_s = now + timeout_s
        loop = asyncio.get_running_loop()
        ep.drain_timer = loop.call_later(timeout_s, self.expire_drain, ep)

    def expire_drain(self, ep: Endpoint) -> None:
        """The drain timeout: cancels the calls still in flight on a DRAINING endpoint."""
        ep.drain_timer = None
        if ep.state is not State.DRAINING:
            return
        ep.drain_timed_out = True
        log.warning(
            "cluster %s: endpoint %s drain timed out; cancelling %d calls",
            self.name, ep.id, len(ep.calls),
        )  # fmt: skip
        for call in list(ep.calls):
            call.cancel()

    def undrain(self, endpoint_id: str) -> Endpoint:
        """Returns a draining or drained endpoint to service: READY, or UNHEALTHY when its
        health checks (or discovery) say so. Anything else is left as is, and so is an
        endpoint discovery reports terminating.
        """
        ep = self.get(endpoint_id)
        if ep.removed:
            raise UnknownEndpoint(f"endpoint {endpoint_id!r} was removed by discovery")
        if ep.address.terminating:
            # Its pod is going away: traffic back to it would fail with the pod.
            log.info("cluster %s: endpoint %s stays drained: terminating", self.name, ep.id)
            return ep
        if ep.state in (State.DRAINING, State.DRAINED):
            state = State.READY if ep.healthy and ep.reachable else State.UNHEALTHY
            ep.transition(state, "undrained by operator", self._clock())
        return ep

    # --- weights and the picker -------------------------------------------------------------

    def rebuild(self) -> None:
        """Recomputes effective weights (slow start) and the picker over READY endpoints.

        In panic (fewer than `panic_threshold_percent` of the judged endpoints —
        not drained, not PENDING — are READY) the picker takes every judged
        endpoint whose channel can connect, at its weight, as Envoy does: health
        signals that fail everywhere at once are more likely wrong than the pods.
        A channel in TRANSIENT_FAILURE stays out even then: a call on it fails at once.
        """
        now = self._clock()
        endpoints = list(self.endpoints.values())
        ready = [ep for ep in endpoints if ep.state is State.READY]
        judged = [ep for ep in endpoints if ep.state in _JUDGED]
        self._set_panic(len(ready), len(judged))
        ramping = self._slow_start_factors(ready, now)
        self.slow_start_factors = ramping
        for ep in endpoints:
            ep.effective_weight = 0.0
        for ep in ready:
            ep.effective_weight = ep.weight * ramping.get(ep.id, 1.0)
        serving = ready
        if self.panic:
            serving = [ep for ep in judged if ep.reachable]
            for ep in serving:
                if ep.state is not State.READY:
                    ep.effective_weight = float(ep.weight)
        routable = [ep for ep in serving if ep.effective_weight > 0]
        self._routable = routable
        self._picker = build_picker(
            self.policy, routable, self._rng, tolerance=self.config.peak_ewma.tolerance
        )
        for listener in self.rebuild_listeners:
            listener(self)

    def _set_panic(self, ready: int, judged: int) -> None:
        threshold = self.config.panic_threshold_percent
        panic = threshold > 0 and judged > 0 and ready * 100 < threshold * judged
        if panic and not self.panic:
            log.warning(
                "cluster %s: panic: %d of %d endpoints READY, below the panic threshold of"
                " %g %%; routing to every one not drained that can connect",
                self.name, ready, judged, threshold,
            )  # fmt: skip
        elif self.panic and not panic:
            log.warning(
                "cluster %s: panic over: %d of %d endpoints READY", self.name, ready, judged
            )
        self.panic = panic

    def _slow_start_factors(self, ready: list[Endpoint], now: float) -> dict[str, float]:
        """Envoy: weight × max(min_weight_percent, time_factor^(1/aggression)).

        time_factor = max(t, 1) / window. When every endpoint is new (a fresh
        deployment) slow start would change nothing but the noise, so it is off.
        """
        config = self.config.slow_start
        window = config.window_s
        if not window:
            return {}
        factors = {}
        for ep in ready:
            age = now - (now if ep.ready_since_s is None else ep.ready_since_s)
            if age < window:
                ramp = (max(age, 1.0) / window) ** (1 / config.aggression)
                factors[ep.id] = max(config.min_weight_percent / 100, ramp)
        if len(factors) == len(ready):
            return {}
        return factors

    def slow_start_ends_s(self, ep: Endpoint) -> float | None:
        """When `ep`'s slow start ends (the cluster's clock); None when it is not ramping."""
        if ep.id not in self.slow_start_factors or ep.ready_since_s is None:
            return None
        return ep.ready_since_s + self.config.slow_start.window_s

    def rebuild_if_ramping(self) -> None:
        """The slow-start tick: rebuilds while some READY endpoint is inside its window."""
        window = self.config.slow_start.window_s
        now = self._clock()
        if window and any(
            ep.state is State.READY
            and ep.ready_since_s is not None
            and now - ep.ready_since_s < window + 1
            for ep in self.endpoints.values()
        ):
            self.rebuild()

    async def close(self) -> None:
        for ep in self.endpoints.values():
            ep.cancel_drain_timer()
            if ep.connectivity_task is not None:
                ep.connectivity_task.cancel()
        channels = [ep.channel for ep in self.endpoints.values() if ep.channel is not None]
        await asyncio.gather(*(ch.close() for ch in channels), *self._closing)


async def follow_connectivity(channel: grpc.aio.Channel, report: ConnectivityReport) -> None:
    """Reports every connectivity state of `channel` until cancelled.

    Asks the channel to connect each time (`try_to_connect`): an idle channel
    would otherwise wait for a call to find out its endpoint is gone, and one in
    TRANSIENT_FAILURE must keep trying (with gRPC's reconnect backoff) so its
    recovery is seen.
    """
    state = channel.get_state(try_to_connect=True)
    while True:
        report(state)
        if state is grpc.ChannelConnectivity.SHUTDOWN:
            return
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)
