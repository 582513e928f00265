"""Prometheus series of the xDS server: proxyless calls per pod (LRS) and client sync.

Built from the same admin view as every other series (`balancer.admin.metrics`
yields these when `[xds]` is on), so the snapshot and the metrics agree.
"""

from __future__ import annotations

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from balancer.admin.snapshot import BalancerView

_EP = ("cluster", "endpoint")


def proxyless_metrics(view: BalancerView) -> list[Metric]:
    """Nothing without `[xds]`; else per-endpoint proxyless calls and per-cluster sync."""
    if view.xds is None:
        return []
    calls = CounterMetricFamily(
        "ballast_endpoint_proxyless_requests",
        "Calls proxyless (xDS) clients reported to the endpoint (LRS), by result.",
        labels=(*_EP, "result"),
    )
    in_flight = GaugeMetricFamily(
        "ballast_endpoint_proxyless_in_flight",
        "Calls proxyless clients reported in progress on the endpoint.",
        labels=_EP,
    )
    for cluster in view.clusters:
        for ep in cluster.endpoints:
            if ep.proxyless is None:
                continue
            labels = (cluster.name, ep.endpoint_id)
            for result, count in (("issued", ep.proxyless.issued),
                                  ("succeeded", ep.proxyless.succeeded),
                                  ("errored", ep.proxyless.errored)):  # fmt: skip
                calls.add_metric((*labels, result), count)
            in_flight.add_metric(labels, ep.proxyless.in_progress)
    return [calls, in_flight, *_sync(view)]


def _sync(view: BalancerView) -> list[Metric]:
    clients = GaugeMetricFamily(
        "ballast_xds_clients",
        "Proxyless clients subscribed to the cluster's endpoints, and those in sync.",
        labels=("cluster", "in_sync"),
    )
    for cluster in view.clusters:
        clients.add_metric((cluster.name, "true"), cluster.xds_clients_in_sync)
        clients.add_metric(
            (cluster.name, "false"), cluster.xds_clients - cluster.xds_clients_in_sync
        )
    nacks = GaugeMetricFamily(
        "ballast_xds_pending_nacks",
        "NACKs of xDS clients not yet followed by an ACK of a later version.",
    )
    assert view.xds is not None
    nacks.add_metric((), sum(len(c.pending_nacks) for c in view.xds.clients))
    return [clients, nacks]
