"""The overview: one summary per service from its newest frame (the balancer replicas'
status comes from `dashboard.control.api.observed.replicas`, as the API shows it)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dashboard.app.history import service_history

# A service whose newest frame is older than this many intervals shows as stale: the
# collector stopped, or cannot reach any replica.
STALE_INTERVALS = 5
# The service page's colors (service.js), so a pod has one color everywhere.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
           "#b07aa1", "#ff9da7", "#9c755f", "#8cd17d", "#86bcb6", "#d37295")  # fmt: skip


@dataclass(frozen=True)
class Share:
    """One pod's part of a service's requests, for the stacked share bar."""

    pod: str
    rps: float
    percent: float  # of the service's total, 0-100


@dataclass(frozen=True)
class ServiceSummary:
    name: str
    has_data: bool = False
    stale: bool = False
    age_s: float | None = None  # how old the newest frame is
    pods: int = 0
    ready: int = 0
    rps: float | None = None  # via Ballast
    pod_rps: float | None = None  # what the pods report, all clients
    err_ratio: float | None = None
    p99: float | None = None
    imbalance: Mapping[str, Any] = field(default_factory=dict)  # via Ballast
    pod_imbalance: Mapping[str, Any] = field(default_factory=dict)  # all clients
    shares: Sequence[Share] = ()
    pod_shares: Sequence[Share] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.imbalance.get("flagged") or self.pod_imbalance.get("flagged"))


def summarize(service: str, now_s: float | None = None) -> ServiceSummary:
    """The summary of `service` from its newest frame in this process's history."""
    newest = service_history().latest(service, 1)
    if not newest:
        return ServiceSummary(service)
    frame = json.loads(newest[0])
    now_s = time.time() if now_s is None else now_s
    age_s = max(0.0, now_s - frame["t"] / 1000)
    interval_s = settings.BALLAST_COLLECTOR_INTERVAL_MS / 1000
    totals = frame.get("totals", {})
    pods = frame.get("pods", [])
    return ServiceSummary(
        name=service,
        has_data=True,
        stale=age_s > STALE_INTERVALS * interval_s,
        age_s=age_s,
        pods=totals.get("pods", len(pods)),
        ready=totals.get("ready", 0),
        rps=totals.get("rps"),
        pod_rps=totals.get("pod_rps"),
        err_ratio=totals.get("err_ratio"),
        p99=totals.get("p99"),
        imbalance=frame.get("imbalance") or {},
        pod_imbalance=frame.get("pod_imbalance") or {},
        shares=_shares(pods, "rps"),
        pod_shares=_shares(pods, "pod_rps"),
    )


def _shares(pods: Sequence[Mapping[str, Any]], key: str) -> list[Share]:
    rates = [(p["pod"], p.get(key)) for p in pods]
    total = sum(r for _, r in rates if r)
    if not total:
        return []
    return [Share(pod, r, 100 * r / total) for pod, r in rates if r]


def overview() -> list[ServiceSummary]:
    """Every configured service, in configuration order."""
    now_s = time.time()
    return [summarize(service, now_s) for service in settings.BALLAST_SERVICES]
