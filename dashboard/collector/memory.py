"""Time to OOM per pod, from its memory trend: the working set's slope over a window.

The platform reports each pod's memory (the working set on Kubernetes, the resident set
locally: what the OOM killer looks at) and its limit with the pod facts. `MemoryTrends`
keeps the last `window_s` of those samples per pod; `forecast` fits a least-squares line
through the samples since the last garbage-collection drop and says when it meets the
limit. A single low sample between two high ones (a measurement dip) is left out; a drop
that stays (a GC, a cache freed) starts the trend again, so the slope is never pulled
down by a level the pod left. No forecast when the slope is flat or falling, the limit
unknown, or the samples too few or too close together to tell.

Plain Python, no Django: the collector feeds it, the frames and the OOM guard read it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from platforms.base import PodFacts

MiB = 1024 * 1024
WINDOW_S = 90.0  # long enough to average noise, short enough to follow a new leak
MIN_SAMPLES = 4
MIN_SPAN_S = 8.0  # a slope over less than this is noise
# A fall of more than this share of the working set is a GC drop (a level shift), not noise.
DROP_FRACTION = 0.05
# Slower than this the pod would take a day to grow 100 MiB: flat, no forecast.
MIN_SLOPE_BYTES_PER_S = 1024.0
# A pod's first seconds (imports, caches filling) grow fast and say nothing of a leak: its
# samples count from this long after it started and once it is ready (gRPC's weighted
# round robin has the same blackout for new endpoints).
BLACKOUT_S = 5.0

Sample = tuple[float, float]  # (Unix seconds, bytes)


@dataclass(frozen=True)
class OomForecast:
    """A pod's predicted time to OOM: its working set now, its limit and its growth."""

    pod: str
    memory_bytes: int
    limit_bytes: int
    slope_bytes_per_s: float
    seconds_to_oom: float

    def reason(self) -> str:
        """In words, as the audit and the page say it: "inventory-abc: working set 231 MiB
        of 256 MiB, +1.2 MiB/s → OOM in ~21 s"."""
        return (
            f"{self.pod}: working set {self.memory_bytes / MiB:.0f} MiB of"
            f" {self.limit_bytes / MiB:.0f} MiB, +{self.slope_bytes_per_s / MiB:.1f} MiB/s"
            f" → OOM in ~{self.seconds_to_oom:.0f} s"
        )


def least_squares_slope(samples: Sequence[Sample]) -> float | None:
    """The slope (bytes per second) of the least-squares line through `samples`; None
    for fewer than two samples or all at one time."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread <= 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread


def _dropped(before: float, after: float) -> bool:
    return after < before * (1 - DROP_FRACTION)


def without_dips(samples: Sequence[Sample]) -> list[Sample]:
    """`samples` without single low samples the next one climbs back from (a
    measurement dip, not a drop that stays)."""
    kept: list[Sample] = []
    for i, sample in enumerate(samples):
        prev = kept[-1] if kept else None
        nxt = samples[i + 1] if i + 1 < len(samples) else None
        if prev and nxt and _dropped(prev[1], sample[1]) and not _dropped(prev[1], nxt[1]):
            continue
        kept.append(sample)
    return kept


def since_last_drop(samples: Sequence[Sample]) -> list[Sample]:
    """The samples after the last GC drop (all of them when there was none)."""
    start = 0
    for i in range(1, len(samples)):
        if _dropped(samples[i - 1][1], samples[i][1]):
            start = i
    return list(samples[start:])


def forecast(pod: str, samples: Sequence[Sample], limit_bytes: int | None) -> OomForecast | None:
    """When the pod's working set meets `limit_bytes` at its current growth; None without
    a limit, with too few samples since the last drop (`MIN_SAMPLES` over `MIN_SPAN_S`),
    or when it grows slower than `MIN_SLOPE_BYTES_PER_S`. Already over the limit: 0 s."""
    if limit_bytes is None or limit_bytes <= 0:
        return None
    trend = since_last_drop(without_dips(samples))
    if len(trend) < MIN_SAMPLES or trend[-1][0] - trend[0][0] < MIN_SPAN_S:
        return None
    slope = least_squares_slope(trend)
    if slope is None or not math.isfinite(slope) or slope < MIN_SLOPE_BYTES_PER_S:
        return None
    now_bytes = trend[-1][1]
    seconds = max(0.0, (limit_bytes - now_bytes) / slope)
    return OomForecast(pod, int(now_bytes), limit_bytes, slope, seconds)


class MemoryTrends:
    """The last `window_s` of memory samples of every pod listed, per deployment.

    `observe` takes each listing of a deployment's pods; a pod no longer listed is
    forgotten (a restarted pod is a new pod, with a trend of its own), so what it holds
    is bounded by the pods there are and the window.
    """

    def __init__(self, window_s: float = WINDOW_S) -> None:
        if not window_s > MIN_SPAN_S:
            raise ValueError(f"window_s must be over {MIN_SPAN_S:g} s, got {window_s!r}")
        self.window_s = window_s
        self._samples: dict[str, dict[str, deque[Sample]]] = {}
        self._limits: dict[str, dict[str, int | None]] = {}

    def observe(self, deployment: str, pods: Iterable[PodFacts], now_s: float) -> None:
        """Adds the memory at `now_s` of each running pod past its blackout (ready, started
        `BLACKOUT_S` ago) and drops samples older than the window."""
        listed = [p for p in pods if p.phase == "Running"]
        old = self._samples.get(deployment, {})
        kept = {p.name: old.get(p.name, deque()) for p in listed}
        for pod in listed:
            series = kept[pod.name]
            memory = pod.memory_bytes
            fresh = not series or now_s > series[-1][0]
            if memory is not None and fresh and _past_blackout(pod, now_s):
                series.append((now_s, float(memory)))
            while series and series[0][0] < now_s - self.window_s:
                series.popleft()
        self._samples[deployment] = kept
        self._limits[deployment] = {p.name: p.memory_limit_bytes for p in listed}

    def samples(self, deployment: str, pod: str) -> list[Sample]:
        """The pod's samples in the window, oldest first."""
        return list(self._samples.get(deployment, {}).get(pod, ()))

    def forecasts(self, deployment: str) -> dict[str, OomForecast]:
        """Every pod of the deployment with a forecast, by name."""
        limits = self._limits.get(deployment, {})
        found = {
            name: forecast(name, list(series), limits.get(name))
            for name, series in self._samples.get(deployment, {}).items()
        }
        return {name: f for name, f in found.items() if f is not None}


def _past_blackout(pod: PodFacts, now_s: float) -> bool:
    """Whether the pod's memory counts: ready, and past its first `BLACKOUT_S`."""
    started = pod.started_at_s
    return pod.ready and (started is None or now_s - started >= BLACKOUT_S)


def oom_seconds(forecasts: Mapping[str, OomForecast]) -> dict[str, int]:
    """Each pod's predicted seconds to OOM, rounded, as frames and the API carry it."""
    return {name: round(f.seconds_to_oom) for name, f in forecasts.items()}
