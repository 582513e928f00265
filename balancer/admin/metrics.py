"""Prometheus metrics, read from the balancer at scrape time.

Nothing is counted for Prometheus on the request path: a custom collector
turns a `snapshot.Reader` view into metric families when Prometheus scrapes,
so recording stays `EndpointStats.record` and nothing more. The collector sits
in a private registry (no process or GC metrics of the default one mixed in,
and two balancers in one process do not clash).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from balancer.admin.snapshot import BalancerView, Reader
from balancer.endpoint import State
from balancer.stats import CODE_INDEX, LATENCY_BOUNDS_MS, STATUS_CODES
from balancer.xds.metrics import proxyless_metrics

_EP = ("cluster", "endpoint")
# Histogram bucket labels (`le`), in seconds as Prometheus names durations.
_LE = (*(floatToGoString(b / 1000) for b in LATENCY_BOUNDS_MS), "+Inf")  # type: ignore[no-untyped-call]
_OK = CODE_INDEX[grpc.StatusCode.OK]


class BalancerCollector:
    """Per-endpoint series of one balancer, built from a fresh view at every scrape.

    `collect` runs in prometheus_client's HTTP thread, not on the event loop:
    the Reader copies what it walks (see the thread note in `snapshot`).
    """

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def collect(self) -> Iterator[Metric]:
        view = self._reader.balancer()
        yield from _endpoint_counters(view)
        yield from _endpoint_gauges(view)
        yield _latency(view)
        yield _cluster_info(view)
        yield _connections(view)
        yield from _budget(view)
        yield from _retries(view)
        yield from proxyless_metrics(view)
        yield _engine(view)


def _endpoint_counters(view: BalancerView) -> list[Metric]:
    requests = CounterMetricFamily(
        "ballast_endpoint_requests",
        "Finished calls to the endpoint, by gRPC status code.",
        labels=(*_EP, "code"),
    )
    received = CounterMetricFamily(
        "ballast_endpoint_received_bytes", "Request message bytes from clients.", labels=_EP
    )
    sent = CounterMetricFamily(
        "ballast_endpoint_sent_bytes", "Response message bytes to clients.", labels=_EP
    )
    ejections = CounterMetricFamily(
        "ballast_endpoint_ejections", "Times outlier detection ejected the endpoint.", labels=_EP
    )
    for cluster in view.clusters:
        for ep in cluster.endpoints:
            labels = (cluster.name, ep.endpoint_id)
            for i, count in enumerate(ep.requests):
                # OK always, so rate() has a series from the start; other codes once seen.
                if count or i == _OK:
                    requests.add_metric((*labels, STATUS_CODES[i].name), count)
            received.add_metric(labels, ep.bytes_received)
            sent.add_metric(labels, ep.bytes_sent)
            ejections.add_metric(labels, ep.ejections_total)
    return [requests, received, sent, ejections]


def _endpoint_gauges(view: BalancerView) -> list[Metric]:
    in_flight = GaugeMetricFamily(
        "ballast_endpoint_in_flight", "Calls to the endpoint in flight now.", labels=_EP
    )
    weight = GaugeMetricFamily(
        "ballast_endpoint_weight", "The operator's weight (0 to 10000).", labels=_EP
    )
    effective = GaugeMetricFamily(
        "ballast_endpoint_effective_weight",
        "The weight the picker uses: weight scaled by slow start, 0 when not READY.",
        labels=_EP,
    )
    state = GaugeMetricFamily(
        "ballast_endpoint_state",
        "1 for the endpoint's current state, 0 for the others.",
        labels=(*_EP, "state"),
    )
    ewma = GaugeMetricFamily(
        "ballast_endpoint_ewma_latency_seconds",
        "Peak EWMA latency estimate (the peak_ewma policy's view).",
        labels=_EP,
    )
    for cluster in view.clusters:
        for ep in cluster.endpoints:
            labels = (cluster.name, ep.endpoint_id)
            in_flight.add_metric(labels, ep.in_flight)
            weight.add_metric(labels, ep.weight)
            effective.add_metric(labels, ep.effective_weight)
            ewma.add_metric(labels, ep.ewma_latency_s)
            for s in State:
                state.add_metric((*labels, s.value), 1.0 if s is ep.state else 0.0)
    return [in_flight, weight, effective, state, ewma]


def _latency(view: BalancerView) -> Metric:
    histogram = HistogramMetricFamily(
        "ballast_endpoint_request_duration_seconds",
        "Time from picking the endpoint to the call's end, as the balancer saw it.",
        labels=_EP,
    )
    for cluster in view.clusters:
        for ep in cluster.endpoints:
            cumulative = itertools.accumulate(ep.latency_counts)
            buckets = [(le, float(n)) for le, n in zip(_LE, cumulative, strict=True)]
            histogram.add_metric((cluster.name, ep.endpoint_id), buckets, ep.latency_sum_s)
    return histogram


_RETRY_SERIES = (
    ("retries", "retries", "Failed tries on the endpoint that were tried again on another."),
    ("retries_succeeded", "succeeded", "Calls that succeeded after a retry of its failure."),
    ("retry_budget_exhausted", "budget_exhausted",
     "Failures with a retried code passed to the caller: the retry budget was spent."),
    ("retries_not_safe", "not_safe",
     "Failures with a retried code not retried: a retry was not safe."),
)  # fmt: skip


def _retries(view: BalancerView) -> list[Metric]:
    """The embedded proxy's retries, per endpoint and per cluster (removed endpoints kept)."""
    families: list[Metric] = []
    for name, attribute, help_text in _RETRY_SERIES:
        endpoint = CounterMetricFamily(f"ballast_endpoint_{name}", help_text, labels=_EP)
        cluster = CounterMetricFamily(
            f"ballast_cluster_{name}", f"{help_text} (the cluster's endpoints, all time)",
            labels=("cluster",),
        )  # fmt: skip
        for c in view.clusters:
            cluster.add_metric((c.name,), getattr(c.retries, attribute))
            for ep in c.endpoints:
                endpoint.add_metric((c.name, ep.endpoint_id), getattr(ep.retries, attribute))
        families += [endpoint, cluster]
    spent = GaugeMetricFamily(
        "ballast_cluster_retry_budget_spent",
        "1 while the cluster's retry budget is spent (failures go to the caller), else 0.",
        labels=("cluster",),
    )
    for c in view.clusters:
        spent.add_metric((c.name,), 1 if c.retry_budget_exhausted else 0)
    return [*families, spent]


def _cluster_info(view: BalancerView) -> Metric:
    info = GaugeMetricFamily(
        "ballast_cluster_info",
        "Always 1; the cluster's policy as a label.",
        labels=("cluster", "policy"),
    )
    for cluster in view.clusters:
        info.add_metric((cluster.name, cluster.policy), 1)
    return info


def balancer_registry(reader: Reader) -> CollectorRegistry:
    """A private registry holding only the balancer's collector."""
    registry = CollectorRegistry()
    registry.register(BalancerCollector(reader))
    return registry


def _budget(view: BalancerView) -> list[Metric]:
    refused = CounterMetricFamily(
        "ballast_messages_over_budget",
        "Messages refused with RESOURCE_EXHAUSTED: past balancer.max_in_flight_bytes.",
        value=view.messages_over_budget_total,
    )
    held = GaugeMetricFamily(
        "ballast_in_flight_message_bytes",
        "Message bytes the proxy holds now (read from one side, not yet sent on).",
        value=view.in_flight_message_bytes,
    )
    return [refused, held]


def _engine(view: BalancerView) -> Metric:
    up = GaugeMetricFamily(
        "ballast_engine_up",
        "1 while the engine carrying calls can carry them; 0 while HAProxy is being restarted.",
        labels=("engine",),
    )
    up.add_metric((view.engine,), 1 if view.engine_up else 0)
    return up


def _connections(view: BalancerView) -> Metric:
    connections = GaugeMetricFamily(
        "ballast_client_connections",
        "Open client connections to the balancer's listeners, by peer IP.",
        labels=("peer",),
    )
    for peer, count in view.connections:
        connections.add_metric((peer,), count)
    return connections
