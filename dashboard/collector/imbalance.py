"""How unevenly a service's pods share its traffic.

Two numbers, as the overview shows them: the busiest pod's load over the mean
(what an operator reads at a glance: "this pod takes 3× its share") and the
coefficient of variation (population stdev / mean: the spread of all pods, not
only the top one).
"""

from __future__ import annotations

import math
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
) -> Imbalance:
    """Scores `load_by_pod` (requests per second, or weight-normalised load; see `frames`)."""
    pods = len(load_by_pod)
    mean = sum(load_by_pod.values()) / pods if pods else 0.0
    if mean <= 0:
        return Imbalance(pods, 0.0, None, None, None, flagged=False)
    busiest = max(sorted(load_by_pod), key=load_by_pod.__getitem__)  # ties: first by name
    ratio = load_by_pod[busiest] / mean
    stdev = math.sqrt(sum((x - mean) ** 2 for x in load_by_pod.values()) / pods)
    cv = stdev / mean
    crossed = ratio > max_over_mean_limit or cv > cv_limit
    return Imbalance(pods, mean, ratio, cv, busiest, flagged=crossed and mean >= min_mean_rps)
