"""How unevenly a service's pods share its traffic.

Two numbers, as the overview shows them: the busiest pod's load over the mean
(what an operator reads at a glance: "this pod takes 3× its share") and the
coefficient of variation (population stdev / mean: the spread of all pods, not
only the top one).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

# A balanced service stays well under both limits: per-request balancing keeps
# every pod within a few percent of the mean, while L4 pinning of long-lived
# HTTP/2 connections typically gives one pod 2× or more. 1.25 means the busiest
# pod takes a quarter more than its share, the point where its latency and
# memory start to diverge in the demo; a CV of 0.2 catches a spread over many
# pods (e.g. half the pods at 0.8×, half at 1.2×) that the top pod alone hides.
MAX_OVER_MEAN_LIMIT = 1.25
CV_LIMIT = 0.2
# Under this mean, per-second counts are too small to tell skew from chance:
# Poisson noise alone gives a CV of about 1 / sqrt(requests per pod and window).
# Pass rates averaged over several seconds for a steadier score.
MIN_MEAN_RPS = 5.0
# The window `LoadWindow` averages over before scoring: per-second counts of a few
# dozen requests per pod spread by chance alone (40/s gives a CV near 0.16), enough
# to flag a balanced service now and then; over 10 s the spread is a third of that.
WINDOW_S = 10.0
# The busiest pod named stays named until another takes this much more (5 %): two pods
# within a few percent of each other would otherwise swap the title every second.
BUSIEST_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class Imbalance:
    """The spread of load over a service's pods.

    `max_over_mean` and `cv` are None when there is nothing to compare: no
    pods, or no traffic at all. One pod is balanced by definition (1.0 and 0.0).
    `flagged` is True only when the mean is at least `min_mean_rps` and a limit
    is crossed.
    """

    pods: int
    mean_rps: float
    max_over_mean: float | None
    cv: float | None
    busiest: str | None
    flagged: bool


def imbalance(
    load_by_pod: Mapping[str, float],
    *,
    max_over_mean_limit: float = MAX_OVER_MEAN_LIMIT,
    cv_limit: float = CV_LIMIT,
    min_mean_rps: float = MIN_MEAN_RPS,
    incumbent: str | None = None,
    busiest_margin: float = BUSIEST_MARGIN,
) -> Imbalance:
    """Scores `load_by_pod` (requests per second, or weight-normalised load; see `frames`).

    `max_over_mean` is always the top pod's. `busiest` names the top pod, except that
    `incumbent` (the pod named last time) keeps the name while its load is within
    `busiest_margin` of the top: hysteresis, so near-equal pods do not take turns.
    """
    pods = len(load_by_pod)
    mean = sum(load_by_pod.values()) / pods if pods else 0.0
    if mean <= 0:
        return Imbalance(pods, 0.0, None, None, None, flagged=False)
    top = max(sorted(load_by_pod), key=load_by_pod.__getitem__)  # ties: first by name
    ratio = load_by_pod[top] / mean
    floor = load_by_pod[top] * (1 - busiest_margin)
    held = incumbent is not None and load_by_pod.get(incumbent, -1.0) >= floor
    busiest = incumbent if held and incumbent is not None else top
    stdev = math.sqrt(sum((x - mean) ** 2 for x in load_by_pod.values()) / pods)
    cv = stdev / mean
    crossed = ratio > max_over_mean_limit or cv > cv_limit
    return Imbalance(pods, mean, ratio, cv, busiest, flagged=crossed and mean >= min_mean_rps)


class LoadWindow:
    """Each pod's mean load over the last `size` intervals, for a steadier score.

    `add` takes one interval's loads and returns the mean of every pod in it
    over the intervals (of the window) it was present in. A pod that left (gone,
    drained) drops out at once; a new pod counts from its first interval.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a load window holds at least one interval, got {size}")
        self._loads: deque[Mapping[str, float]] = deque(maxlen=size)
        # The pod the last score named busiest, for `imbalance(incumbent=...)`.
        self.busiest: str | None = None

    def add(self, load: Mapping[str, float]) -> dict[str, float]:
        self._loads.append(dict(load))
        return self.means()

    def means(self) -> dict[str, float]:
        """Each pod of the last interval added: its mean over the intervals it was in."""
        if not self._loads:
            return {}
        means: dict[str, float] = {}
        for pod in self._loads[-1]:
            values = [interval[pod] for interval in self._loads if pod in interval]
            means[pod] = sum(values) / len(values)
        return means
