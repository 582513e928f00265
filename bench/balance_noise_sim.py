"""The noise and slow-pod scenarios as a seeded discrete-event simulation of Ballast's own picker
(`PowerOfTwo` on `peak_ewma_cost`) and `PeakEwma`, for comparing latency estimates where a shared
machine's noise cannot blur them. Prints one JSON object.

Pods answer in their latency (×0.9–1.3); clients arrive as a Poisson stream; every 3 s the next
pod answers the calls it starts within 40 ms in 250 ms (a spike, as bench/balance_noise.py
injects). With stalls, the whole process freezes now and then (every `stall_every_s` on average,
for up to `stall_max_s`): every call in flight ends late, whichever pod it was on, as when the
balancer's own process is descheduled. The slow-pod case: 4 pods, one at 50 ms (10×), 200
calls/s; the pod's share and the p99 once settled (after 20 s), and its share in the 10 s after
it turns slow mid-run.

    .venv/bin/python bench/balance_noise_sim.py          # about 2 min
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balancer.load import FailureLoad, PeakEwma
from balancer.picker import PowerOfTwo, peak_ewma_cost

# name → PeakEwma settings (bench/balance_estimates.py's, and Ballast's defaults).
ESTIMATES: dict[str, dict[str, float]] = {
    "ballast": {"decay_s": 10.0, "peak_decay_s": 0.1, "outlier_cap": 2.0},
    "linkerd": {"decay_s": 10.0, "peak_decay_s": 10.0, "outlier_cap": 0.0},
    "decay_1s": {"decay_s": 1.0, "peak_decay_s": 1.0, "outlier_cap": 0.0},
    "peak_only": {"decay_s": 10.0, "peak_decay_s": 0.1, "outlier_cap": 0.0},
}
SPIKE_MS, SPIKE_HOLD_S, SPIKE_EVERY_S = 250.0, 0.04, 3.0
WINDOW_S = 10


@dataclass
class SimEndpoint:
    """What the picker reads of an endpoint: its estimate and its calls in flight."""

    id: int
    ewma: PeakEwma
    calls: set[object] = field(default_factory=set)
    effective_weight: float = 100.0
    failure_load: FailureLoad = field(default_factory=lambda: FailureLoad(penalty_s=5, now_s=0))


@dataclass(frozen=True)
class Case:
    pods: int = 5
    rate_per_s: float = 400.0
    duration_s: float = 120.0
    latency_ms: tuple[float, ...] = (6.0,) * 5
    spikes: bool = True
    stall_every_s: float = 0.0  # 0: no stalls
    stall_max_s: float = 1.0
    slow_from_s: float | None = None  # pod 0 turns 50 ms from then on


def stalls_of(case: Case, rng: random.Random) -> list[tuple[float, float]]:
    stalls: list[tuple[float, float]] = []
    t = rng.expovariate(1 / case.stall_every_s) if case.stall_every_s else case.duration_s
    while t < case.duration_s:
        length_s = rng.uniform(0.05, case.stall_max_s)
        stalls.append((t, t + length_s))
        t += length_s + rng.expovariate(1 / case.stall_every_s)
    return stalls


def simulate(
    case: Case, estimate: Callable[[], PeakEwma], seed: int
) -> tuple[list[tuple[float, int]], list[float]]:
    """Picks (time, pod) and every call's latency in seconds."""
    rng = random.Random(seed)
    eps = [SimEndpoint(i, estimate()) for i in range(case.pods)]
    picker = PowerOfTwo(eps, random.Random(seed + 1), peak_ewma_cost, 0.5)  # type: ignore[arg-type]
    order = itertools.count()
    events: list[tuple[float, int, str, Any]] = []
    t = 0.0
    while (t := t + rng.expovariate(case.rate_per_s)) < case.duration_s:
        events.append((t, next(order), "call", None))
    if case.spikes:
        for turn in range(1, int(case.duration_s / SPIKE_EVERY_S) + 1):
            events.append((turn * SPIKE_EVERY_S, next(order), "spike", turn % case.pods))
    heapq.heapify(events)
    stalls = stalls_of(case, rng)
    spiked_until = [-1.0] * case.pods
    picks: list[tuple[float, int]] = []
    latencies: list[float] = []
    while events:
        t, _, kind, data = heapq.heappop(events)
        frozen_until = next((end for start, end in stalls if start <= t < end), None)
        if frozen_until is not None:  # nothing happens during a stall: it happens after
            heapq.heappush(events, (frozen_until, next(order), kind, data))
        elif kind == "spike":
            spiked_until[data] = t + SPIKE_HOLD_S
        elif kind == "call":
            ep = picker.pick(t)
            assert ep is not None
            token = object()
            ep.calls.add(token)
            slow = case.slow_from_s is not None and ep.id == 0 and t >= case.slow_from_s
            ms = SPIKE_MS if t < spiked_until[ep.id] else (50.0 if slow else case.latency_ms[ep.id])
            ms *= 1.0 if t < spiked_until[ep.id] else rng.uniform(0.9, 1.3)
            heapq.heappush(events, (t + ms / 1000, next(order), "done", (ep, token, t)))
            picks.append((t, ep.id))
        else:
            ep, token, started_s = data
            ep.calls.discard(token)
            ep.ewma.observe(t - started_s, t)
            latencies.append(t - started_s)
    return picks, latencies


def max_share_error_pp(picks: list[tuple[float, int]], pods: int, duration_s: float) -> float:
    """The largest |share − 1/pods| over pods and 10 s windows starting every second."""
    per_s = [[0] * pods for _ in range(int(duration_s) + 1)]
    for t, pod in picks:
        per_s[int(t)][pod] += 1
    worst = 0.0
    for start in range(int(duration_s) - WINDOW_S + 1):
        counts = [sum(per_s[s][i] for s in range(start, start + WINDOW_S)) for i in range(pods)]
        total = sum(counts) or 1
        worst = max(worst, *(abs(n / total - 1 / pods) for n in counts))
    return round(worst * 100, 2)


def share(picks: list[tuple[float, int]], pod: int, start_s: float, end_s: float) -> float:
    window = [p for t, p in picks if start_s <= t < end_s]
    return round(window.count(pod) / max(len(window), 1), 4)


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1)


def figures(settings: dict[str, float]) -> dict[str, Any]:
    def estimate() -> PeakEwma:
        return PeakEwma(default_rtt_ms=30, now_s=0, **settings)

    result: dict[str, Any] = {}
    noises = {
        "spikes": Case(),
        "spikes_and_stalls_every_5s_up_to_0.3s": Case(stall_every_s=5.0, stall_max_s=0.3),
        "spikes_and_stalls_every_2s_up_to_1s": Case(stall_every_s=2.0, stall_max_s=1.0),
    }
    for name, case in noises.items():
        errors = [
            max_share_error_pp(simulate(case, estimate, seed)[0], case.pods, case.duration_s)
            for seed in (1, 2)
        ]
        result[f"noise_max_share_error_pp.{name}"] = errors
    slow = Case(pods=4, rate_per_s=200.0, duration_s=60.0, latency_ms=(50.0, 5, 5, 5), spikes=False)
    picks, latencies = simulate(slow, estimate, 1)
    result["slow_pod.slow_share"] = share(picks, 0, 20.0, slow.duration_s)
    result["slow_pod.p99_ms"] = p99_ms(latencies[len(latencies) // 3 :])
    turns = Case(pods=4, rate_per_s=200.0, duration_s=60.0, latency_ms=(5.0,) * 4, spikes=False,
                 slow_from_s=30.0)  # fmt: skip
    picks, _ = simulate(turns, estimate, 1)
    result["turns_slow.share_first_10s"] = share(picks, 0, 30.0, 40.0)
    result["turns_slow.share_next_20s"] = share(picks, 0, 40.0, 60.0)
    return result


def main() -> int:
    report = {name: figures(settings) for name, settings in ESTIMATES.items()}
    print(json.dumps({"estimates": ESTIMATES, "figures": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
