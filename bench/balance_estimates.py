"""Latency estimates compared side by side: peak_ewma's picker over other `PeakEwma` settings,
swapped in live on the same scene (the noise and slow-pod scenarios run each after the
configured one, full mode only).

Each swap carries every endpoint's current estimate over as the new estimate's prior, so a
variant starts where the last one left off, not from 30 ms.
"""

from __future__ import annotations

from typing import Any

from balancer.cluster import Cluster
from balancer.load import PeakEwma

# name → PeakEwma settings. "linkerd": Ballast's estimate before (linkerd's, decay 10 s);
# "decay_1s": the same with a ten times shorter decay; "peak_only": a fast-fading peak
# without the cap on what one answer adds to the average.
ESTIMATES: dict[str, dict[str, float]] = {
    "linkerd": {"decay_s": 10.0, "peak_decay_s": 10.0, "outlier_cap": 0.0},
    "decay_1s": {"decay_s": 1.0, "peak_decay_s": 1.0, "outlier_cap": 0.0},
    "peak_only": {"decay_s": 10.0, "peak_decay_s": 0.1, "outlier_cap": 0.0},
}


def configured(cluster: Cluster) -> dict[str, float]:
    """The cluster's own settings, as in ESTIMATES."""
    config = cluster.config.peak_ewma
    return {
        "decay_s": config.decay_s,
        "peak_decay_s": config.peak_decay_s,
        "outlier_cap": config.outlier_cap,
    }


def use_estimate(cluster: Cluster, settings: dict[str, float], now_s: float) -> None:
    """Gives every endpoint a `PeakEwma` with `settings`, starting from its current estimate."""
    for ep in cluster.endpoints.values():
        current_ms = ep.ewma.estimate_s(now_s) * 1000
        ep.ewma = PeakEwma(default_rtt_ms=current_ms, now_s=now_s, **settings)


def runs_of(policy: str, full: bool) -> list[tuple[str, dict[str, float] | None]]:
    """What to measure for `policy`: itself as configured (None: no swap), then, for
    peak_ewma in full mode, each of ESTIMATES under its report name."""
    runs: list[tuple[str, dict[str, float] | None]] = [(policy, None)]
    if policy == "peak_ewma" and full:
        runs += [(f"peak_ewma/{name}", settings) for name, settings in ESTIMATES.items()]
    return runs


def compared() -> dict[str, Any]:
    """For the report: what each compared estimate was."""
    return {f"peak_ewma/{name}": settings for name, settings in ESTIMATES.items()}
