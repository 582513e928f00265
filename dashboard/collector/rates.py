"""Per-endpoint rates from two consecutive snapshots of one balancer replica.

The balancer's counters are cumulative since it started (admin.proto, DESIGN.md
"Snapshots"). A rate is the difference of two snapshots over the time between
them; latency percentiles come from the difference of the cumulative
histograms, so they describe the interval, not the whole life of the replica.
Replicas are merged per endpoint by adding rates and histograms: a percentile
is taken from the merged histogram, never averaged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from balancer.admin.v1 import admin_pb2
from balancer.stats import quantile_ms

OK = "OK"
_STATE_PREFIX = "ENDPOINT_STATE_"

# When replicas disagree on an endpoint's state, the frame shows the one that
# most needs the operator's eye: a replica that sees it unhealthy matters more
# than one that still sees it ready.
_STATE_PRECEDENCE: tuple[str, ...] = (
    "UNHEALTHY",
    "EJECTED",
    "DRAINING",
    "DRAINED",
    "PENDING",
    "READY",
    "UNSPECIFIED",
)

EndpointKey = tuple[str, str]  # (cluster, endpoint_id): the endpoint identity of DESIGN.md


@dataclass(frozen=True, slots=True)
class EndpointCounters:
    """One endpoint as one snapshot shows it: cumulative counters and gauges."""

    cluster: str
    endpoint_id: str
    pod_name: str | None
    state: str  # READY, DRAINING, … (the EndpointState name without its prefix)
    weight: int
    effective_weight: float
    in_flight: int
    requests_by_code: Mapping[str, int]
    bytes_received: int
    bytes_sent: int
    # One count per Sample.latency_bounds_ms bucket, then the +Inf bucket; not cumulative.
    latency_counts: tuple[int, ...]
    # What proxyless clients ([xds]) say they sent straight to the endpoint (their
    # load reports): cumulative like the proxy's counters, a separate source.
    proxyless_issued: int = 0
    proxyless_errored: int = 0
    # The proxy's retries of this endpoint's failures (cumulative, like the counters above).
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    """One snapshot of one balancer replica, in the shape the rate math needs."""

    balancer_id: str
    taken_at_unix_ms: int
    started_at_unix_ms: int
    latency_bounds_ms: tuple[float, ...]
    endpoints: Mapping[EndpointKey, EndpointCounters]


def sample_from_snapshot(snapshot: admin_pb2.Snapshot) -> Sample:
    """Converts an admin API Snapshot message; the only place that reads the proto."""
    endpoints = {
        (cluster.name, ep.endpoint_id): _counters(cluster.name, ep)
        for cluster in snapshot.clusters
        for ep in cluster.endpoints
    }
    return Sample(
        balancer_id=snapshot.balancer_id,
        taken_at_unix_ms=snapshot.taken_at_unix_ms,
        started_at_unix_ms=snapshot.started_at_unix_ms,
        latency_bounds_ms=tuple(snapshot.latency_bounds_ms),
        endpoints=endpoints,
    )


def state_name(state: int) -> str:
    """An admin API endpoint state as the dashboard names it: READY, DRAINING, …"""
    return str(admin_pb2.EndpointState.Name(state)).removeprefix(_STATE_PREFIX)


def _counters(cluster: str, ep: admin_pb2.EndpointSnapshot) -> EndpointCounters:
    state = state_name(ep.state)
    return EndpointCounters(
        cluster=cluster,
        endpoint_id=ep.endpoint_id,
        pod_name=ep.pod_name or None,
        state=state,
        weight=ep.weight,
        effective_weight=ep.effective_weight,
        in_flight=ep.in_flight,
        requests_by_code=dict(ep.requests_by_code),
        bytes_received=ep.bytes_received,
        bytes_sent=ep.bytes_sent,
        latency_counts=tuple(ep.latency.counts),
        proxyless_issued=ep.proxyless_requests_issued,
        proxyless_errored=ep.proxyless_requests_errored,
        retries=ep.retries_total,
    )


@dataclass(frozen=True, slots=True)
class EndpointRates:
    """What one endpoint did over an interval (or, merged, over all replicas)."""

    cluster: str
    endpoint_id: str
    pod_name: str | None
    rps: float
    errors_per_s: float  # every code but OK
    rps_by_code: Mapping[str, float]  # codes seen in the interval only
    bytes_in_per_s: float  # request messages, from clients
    bytes_out_per_s: float  # response messages, to clients
    in_flight: int  # the later snapshot's gauge
    state: str
    weight: int
    effective_weight: float
    # Requests per latency bucket over the interval (not cumulative), and the
    # bounds they count against; empty counts when no histogram could be used.
    latency_counts: tuple[int, ...]
    latency_bounds_ms: tuple[float, ...]
    replicas: int = 1
    # Calls proxyless clients sent straight to the endpoint per second (from their
    # load reports), and of those the ones that failed: not included in `rps`.
    proxyless_rps: float = 0.0
    proxyless_err_s: float = 0.0
    # Failed tries on the endpoint retried elsewhere: per second over the interval, and in
    # all (the later snapshot's cumulative count, since the replica started).
    retries_per_s: float = 0.0
    retries: int = 0

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile (0..1) of the interval's latencies; None when it had no requests."""
        return quantile_ms(self.latency_counts, q, self.latency_bounds_ms)

    @property
    def p50_ms(self) -> float | None:
        return self.quantile_ms(0.50)

    @property
    def p90_ms(self) -> float | None:
        return self.quantile_ms(0.90)

    @property
    def p99_ms(self) -> float | None:
        return self.quantile_ms(0.99)


def rates(previous: Sample, current: Sample) -> dict[EndpointKey, EndpointRates] | None:
    """Per-endpoint rates between two snapshots of one replica.

    Every endpoint of `current` gets rates; one only in `previous` is gone and
    gets none. An endpoint new in `current`, or whose counters went down, or
    every endpoint when the replica restarted (a new started_at), counts from
    zero: rates are never negative. Returns None when there is no interval to
    divide by: `current` is not later than `previous` (or, after a restart,
    than the restart).
    """
    restarted = current.started_at_unix_ms != previous.started_at_unix_ms
    # After a restart the counters count from the restart, whenever the previous snapshot was.
    from_ms = current.started_at_unix_ms if restarted else previous.taken_at_unix_ms
    elapsed_s = (current.taken_at_unix_ms - from_ms) / 1000
    if elapsed_s <= 0:
        return None
    out: dict[EndpointKey, EndpointRates] = {}
    for key, now in current.endpoints.items():
        before = None if restarted else previous.endpoints.get(key)
        if before is not None and _went_down(before, now):
            before = None
        out[key] = _endpoint_rates(before, now, elapsed_s, current.latency_bounds_ms)
    return out


def cluster_retry_rates(
    previous: admin_pb2.Snapshot | None, current: admin_pb2.Snapshot
) -> dict[str, float]:
    """The proxy's retries per second per cluster between two snapshots of one replica.

    From the clusters' own counters, which keep the retries of endpoints since removed
    (a pod killed with calls held is retried and gone by the next snapshot). Empty
    without an interval; a restarted replica (or a counter that went down) counts from 0.
    """
    if previous is None:
        return {}
    restarted = current.started_at_unix_ms != previous.started_at_unix_ms
    from_ms = current.started_at_unix_ms if restarted else previous.taken_at_unix_ms
    elapsed_s = (current.taken_at_unix_ms - from_ms) / 1000
    if elapsed_s <= 0:
        return {}
    before = {} if restarted else {c.name: c.retries_total for c in previous.clusters}
    out = {}
    for c in current.clusters:
        earlier = before.get(c.name, 0)
        out[c.name] = (c.retries_total - (earlier if earlier <= c.retries_total else 0)) / elapsed_s
    return out


def _went_down(before: EndpointCounters, now: EndpointCounters) -> bool:
    if now.bytes_received < before.bytes_received or now.bytes_sent < before.bytes_sent:
        return True
    if any(now.requests_by_code.get(code, 0) < n for code, n in before.requests_by_code.items()):
        return True
    if (
        now.proxyless_issued < before.proxyless_issued
        or now.proxyless_errored < before.proxyless_errored
    ):
        return True
    if len(now.latency_counts) != len(before.latency_counts):
        return True
    return any(b > a for a, b in zip(now.latency_counts, before.latency_counts, strict=True))


def _endpoint_rates(
    before: EndpointCounters | None,
    now: EndpointCounters,
    elapsed_s: float,
    bounds_ms: tuple[float, ...],
) -> EndpointRates:
    old_codes: Mapping[str, int] = before.requests_by_code if before else {}
    by_code = {
        code: (n - old_codes.get(code, 0)) / elapsed_s
        for code, n in now.requests_by_code.items()
        if n > old_codes.get(code, 0)
    }
    old_latency = before.latency_counts if before else (0,) * len(now.latency_counts)
    return EndpointRates(
        cluster=now.cluster,
        endpoint_id=now.endpoint_id,
        pod_name=now.pod_name,
        rps=sum(by_code.values()),
        errors_per_s=sum(r for code, r in by_code.items() if code != OK),
        rps_by_code=by_code,
        bytes_in_per_s=(now.bytes_received - (before.bytes_received if before else 0)) / elapsed_s,
        bytes_out_per_s=(now.bytes_sent - (before.bytes_sent if before else 0)) / elapsed_s,
        in_flight=now.in_flight,
        state=now.state,
        weight=now.weight,
        effective_weight=now.effective_weight,
        latency_counts=tuple(a - b for a, b in zip(now.latency_counts, old_latency, strict=True)),
        latency_bounds_ms=bounds_ms if len(now.latency_counts) == len(bounds_ms) + 1 else (),
        proxyless_rps=(now.proxyless_issued - (before.proxyless_issued if before else 0))
        / elapsed_s,
        proxyless_err_s=(now.proxyless_errored - (before.proxyless_errored if before else 0))
        / elapsed_s,
        **_retry_rates(before, now, elapsed_s),
    )


def _retry_rates(
    before: EndpointCounters | None, now: EndpointCounters, elapsed_s: float
) -> dict[str, Any]:
    """Retries per second over the interval (never negative) and the count so far."""
    earlier = before.retries if before is not None and before.retries <= now.retries else 0
    return {"retries_per_s": (now.retries - earlier) / elapsed_s, "retries": now.retries}


def merge(
    per_replica: Iterable[Mapping[EndpointKey, EndpointRates]],
) -> dict[EndpointKey, EndpointRates]:
    """Merges several replicas' rates per endpoint.

    Rates, in-flight and latency histograms add up (percentiles come from the
    merged histogram). The state shown is the most alarming one a replica
    reports; the weight the one most replicas report; the effective weight
    their mean. A replica whose histogram bounds differ from the first one's
    adds its rates but not its latencies.
    """
    grouped: dict[EndpointKey, list[EndpointRates]] = {}
    for replica in per_replica:
        for key, r in replica.items():
            grouped.setdefault(key, []).append(r)
    return {key: _merge_one(rs) for key, rs in grouped.items()}


def _merge_one(rs: Sequence[EndpointRates]) -> EndpointRates:
    first = rs[0]
    if len(rs) == 1:
        return first
    by_code: Counter[str] = Counter()
    for r in rs:
        by_code.update(r.rps_by_code)
    bounds = next((r.latency_bounds_ms for r in rs if r.latency_bounds_ms), ())
    latency = _add_histograms([r.latency_counts for r in rs if r.latency_bounds_ms == bounds])
    return EndpointRates(
        cluster=first.cluster,
        endpoint_id=first.endpoint_id,
        pod_name=next((r.pod_name for r in rs if r.pod_name), None),
        rps=sum(r.rps for r in rs),
        errors_per_s=sum(r.errors_per_s for r in rs),
        rps_by_code=dict(by_code),
        bytes_in_per_s=sum(r.bytes_in_per_s for r in rs),
        bytes_out_per_s=sum(r.bytes_out_per_s for r in rs),
        in_flight=sum(r.in_flight for r in rs),
        state=min((r.state for r in rs), key=_state_rank),
        weight=Counter(r.weight for r in rs).most_common(1)[0][0],
        effective_weight=sum(r.effective_weight for r in rs) / len(rs),
        latency_counts=latency if bounds else (),
        latency_bounds_ms=bounds,
        replicas=sum(r.replicas for r in rs),
        # Each proxyless client reports to the one replica it is connected to: they add up.
        proxyless_rps=sum(r.proxyless_rps for r in rs),
        proxyless_err_s=sum(r.proxyless_err_s for r in rs),
        retries_per_s=sum(r.retries_per_s for r in rs),
        retries=sum(r.retries for r in rs),
    )


def _state_rank(state: str) -> int:
    return _STATE_PRECEDENCE.index(state) if state in _STATE_PRECEDENCE else len(_STATE_PRECEDENCE)


def _add_histograms(histograms: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(sum(counts) for counts in zip(*histograms, strict=True))


class RateTracker:
    """Keeps one replica's previous sample and turns each new one into rates.

    `observe` returns None when there is no interval yet: for the first sample,
    and for one no later than the baseline, which it drops (a repeated
    snapshot). A sample from a restarted replica always becomes the baseline.
    """

    def __init__(self) -> None:
        self._previous: Sample | None = None

    def observe(self, sample: Sample) -> dict[EndpointKey, EndpointRates] | None:
        previous = self._previous
        if previous is not None and not _supersedes(sample, previous):
            return None
        self._previous = sample
        return None if previous is None else rates(previous, sample)

    def reset(self) -> None:
        """Forgets the baseline, e.g. when the stream to the replica broke."""
        self._previous = None


def _supersedes(sample: Sample, previous: Sample) -> bool:
    restarted = sample.started_at_unix_ms != previous.started_at_unix_ms
    return restarted or sample.taken_at_unix_ms > previous.taken_at_unix_ms
