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
# Trouble beyond traffic is looked for over this many minutes of frames.
TROUBLE_WINDOW_MIN = 10
# The service page's colors (service.js), so a pod has one color everywhere.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
           "#b07aa1", "#ff9da7", "#9c755f", "#8cd17d", "#86bcb6", "#d37295")  # fmt: skip


@dataclass(frozen=True)
class Share:
    """One pod's part of a service's requests, for the stacked share bar."""

    pod: str
    rps: float
    percent: float  # of the service's total, 0-100
    color: int = 0  # the pod's index in PALETTE, from the frame: the same on every page


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
    bypass_rps: float | None = None  # what reached the pods without Ballast (L4)
    px_rps: float | None = None  # what proxyless clients sent straight to the pods
    px_shares: Sequence[Share] = ()
    xds: Mapping[str, Any] = field(default_factory=dict)  # {clients, in_sync}; empty: none
    bypass_imbalance: Mapping[str, Any] = field(default_factory=dict)
    shares: Sequence[Share] = ()
    pod_shares: Sequence[Share] = ()
    bypass_shares: Sequence[Share] = ()
    story: Sequence[str] = ()  # which path is skewed, in words
    trouble: Sequence[str] = ()  # restarts, OOMKills, pods not ready, replicas out of sync
    # Clients that bypass Ballast pinned to a pod, in words (collector/pinning/); or None.
    finding: str | None = None

    @property
    def xds_pending(self) -> int:
        """Proxyless clients that have not ACKed the endpoints being served yet."""
        return int(self.xds.get("clients", 0)) - int(self.xds.get("in_sync", 0))

    @property
    def xds_label(self) -> str:
        """The frame's words ("xDS clients: 3, all on version 12"; see collector/xds.py), else
        "xDS clients: 3, all in sync" (or "…, 1 pending"); empty without proxyless clients."""
        clients = int(self.xds.get("clients", 0))
        if not clients:
            return ""
        if self.xds.get("label"):
            return str(self.xds["label"])
        pending = self.xds_pending
        return f"xDS clients: {clients}, " + (f"{pending} pending" if pending else "all in sync")

    @property
    def flagged(self) -> bool:
        return bool(
            self.imbalance.get("flagged")
            or self.pod_imbalance.get("flagged")
            or self.bypass_imbalance.get("flagged")
            or self.trouble
        )


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
    bypass = [{**p, "bypass": _bypass(p)} for p in pods]
    earlier = service_history().since(service, frame["t"] - TROUBLE_WINDOW_MIN * 60_000)
    oldest = json.loads(earlier[0]) if earlier else frame
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
        bypass_rps=totals.get("bypass_rps"),
        px_rps=totals.get("px_rps"),
        px_shares=_shares(pods, "px_rps"),
        xds=frame.get("xds") or {},
        bypass_imbalance=frame.get("bypass_imbalance") or {},
        bypass_shares=_shares(bypass, "bypass"),
        story=story(frame),
        trouble=trouble(frame, oldest),
        finding=(frame.get("pinning") or {}).get("finding"),
    )


def _bypass(pod: Mapping[str, Any]) -> float | None:
    own = pod.get("pod_rps")
    carried = (pod.get("rps") or 0.0) + (pod.get("px_rps") or 0.0)  # proxy and proxyless
    return None if own is None else max(0.0, own - carried)


def story(frame: Mapping[str, Any]) -> list[str]:
    """Which path is skewed, in words: the calls that bypass Ballast (the L4 path, whose
    clients are pinned to a pod per connection) and those that come through it."""
    bypass = frame.get("bypass_imbalance") or {}
    via = frame.get("imbalance") or {}
    said = []
    if bypass.get("flagged"):
        said.append(
            f"Clients that bypass Ballast: busiest pod {bypass['max_mean']:.2f}× mean"
            f" ({bypass['busiest']}) — these clients are pinned by L4 connections."
        )
    elif bypass.get("max_mean") is not None:
        said.append("Clients that bypass Ballast are spread evenly.")
    if via.get("flagged"):
        said.append(
            f"Via Ballast: busiest pod {via['max_mean']:.2f}× its weight's share"
            f" ({via['busiest']})."
        )
    elif via.get("leans_away"):
        said.append(
            f"Via Ballast: busiest pod {via['max_mean']:.2f}× mean ({via['busiest']}) by design:"
            f" {frame.get('policy')} sends fewer calls to the pods that clients bypassing"
            " Ballast keep busy."
        )
    elif via.get("max_mean") is not None:
        said.append(f"Via Ballast: even (max/mean {via['max_mean']:.2f}).")
    return said


def trouble(frame: Mapping[str, Any], oldest: Mapping[str, Any]) -> list[str]:
    """Trouble beyond traffic, in words: pods that restarted (OOMKilled or not) since
    `oldest` (the first frame of the last TROUBLE_WINDOW_MIN minutes), pods not ready,
    balancer replicas down or not holding the desired state."""
    before = {p["pod"]: p.get("restarts") or 0 for p in oldest.get("pods", [])}
    found = []
    for p in frame.get("pods", []):
        rose = (p.get("restarts") or 0) - before.get(p["pod"], 0)
        if rose > 0:
            why = " (OOMKilled)" if p.get("last_reason") == "OOMKilled" else ""
            found.append(f"{p['pod']} restarted {rose}× in the last {TROUBLE_WINDOW_MIN} min{why}")
    waiting = [p["pod"] for p in frame.get("pods", []) if p.get("ready") is False]
    if waiting:
        found.append(f"{len(waiting)} pod{'s' if len(waiting) > 1 else ''} not ready: "
                     + ", ".join(waiting))  # fmt: skip
    for r in frame.get("replicas", []):
        if not r.get("up"):
            found.append(f"balancer {r['id']} down")
        elif r.get("converged") is False:
            found.append(f"balancer {r['id']} out of sync with the desired state (applying)")
    return found


def _shares(pods: Sequence[Mapping[str, Any]], key: str) -> list[Share]:
    rates = [(p["pod"], p.get(key)) for p in pods]
    total = sum(r for _, r in rates if r)
    if not total:
        return []
    colors = {p["pod"]: p.get("color", i) % len(PALETTE) for i, p in enumerate(pods)}
    return [Share(pod, r, 100 * r / total, colors[pod]) for pod, r in rates if r]


def overview() -> list[ServiceSummary]:
    """Every configured service, in configuration order."""
    now_s = time.time()
    return [summarize(service, now_s) for service in settings.BALLAST_SERVICES]
