"""The arithmetic of the balance benchmark: imbalance, shares, their errors, and the goals.

Pure functions on plain counts, so a test can check them on known inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Each goal of the issue: where its value lives in the report, the bound, and how it compares.
# A `ratio_of` goal compares value ÷ another value of the report with the bound.
GOALS: tuple[dict[str, Any], ...] = (
    {"name": "pinning.balancer_max_mean", "path": ("pinning", "balancer_max_mean"),
     "op": "<=", "bound": 1.10},
    {"name": "weights.max_share_error", "path": ("weights", "max_share_error"),
     "op": "<=", "bound": 0.03},
    {"name": "slow_pod.peak_ewma_p99_vs_round_robin",
     "path": ("slow_pod", "peak_ewma", "p99_ms"),
     "ratio_of": ("slow_pod", "round_robin", "p99_ms"), "op": "<=", "bound": 0.3},
    {"name": "slow_pod.peak_ewma.slow_share", "path": ("slow_pod", "peak_ewma", "slow_share"),
     "op": "<=", "bound": 1 / 8},
    {"name": "drain.new_requests_after_drain", "path": ("drain", "new_requests_after_drain"),
     "op": "==", "bound": 0},
    {"name": "drain.failed_in_flight", "path": ("drain", "failed_in_flight"),
     "op": "==", "bound": 0},
    {"name": "restart.client_errors", "path": ("restart", "client_errors"),
     "op": "==", "bound": 0},
    {"name": "retries.retry_error_rate_with", "path": ("retries", "retry_error_rate_with"),
     "op": "<=", "bound": 0.001, "engines": ("embedded",)},
    {"name": "noise.noise_max_share_error_pp", "path": ("noise", "noise_max_share_error_pp"),
     "op": "<=", "bound": 3.0},
    # HAProxy has no latency-aware policy (peak_ewma runs as random(2) on in-flight streams),
    # so the slow-pod goal of the issue has no policy to judge there. What least_request
    # (random(2)) promises is that a slower pod, holding its calls longer, gets less than its
    # equal share (1/4 of 4 pods); its p99 and the 1/8 bound are reported, not judged.
    {"name": "slow_pod.least_request.slow_share_below_equal",
     "path": ("slow_pod", "least_request", "slow_share"),
     "op": "<", "bound": 1 / 4, "engines": ("haproxy",)},
)  # fmt: skip
ENGINES = ("embedded", "haproxy")
# Goals of the embedded engine that do not apply to HAProxy's, and why.
NOT_FOR_HAPROXY = {
    "slow_pod.peak_ewma_p99_vs_round_robin": "no latency-aware policy: peak_ewma is random(2)",
    "slow_pod.peak_ewma.slow_share": "no latency-aware policy: peak_ewma is random(2)",
}
# Reported beside HAProxy's goals, not judged: least_request's figures under the bounds of the
# latency-aware goal (a policy on calls in flight still sends a 10×-slower pod some calls at a
# few in flight, so the p99 stays a slow call; the embedded least_request measured 0.98×).
HAPROXY_LEAST_REQUEST_FIGURES = (
    ("slow_pod.least_request_p99_vs_round_robin", ("slow_pod", "least_request", "p99_ms"),
     ("slow_pod", "round_robin", "p99_ms"), 0.3),
    ("slow_pod.least_request.slow_share", ("slow_pod", "least_request", "slow_share"), None,
     1 / 8),
)  # fmt: skip


def counts_over(counts: Mapping[str, int], pods: Sequence[str]) -> list[int]:
    """The counts of `pods`, in order; a pod missing from `counts` got 0."""
    return [counts.get(pod, 0) for pod in pods]


def max_over_mean(counts: Mapping[str, int], pods: Sequence[str]) -> float | None:
    """Busiest pod's count ÷ the mean over `pods` (idle pods count as 0); None without calls."""
    values = counts_over(counts, pods)
    total = sum(values)
    if not values or total == 0:
        return None
    return max(values) / (total / len(values))


def shares(counts: Mapping[str, int], pods: Sequence[str]) -> dict[str, float]:
    """Each pod's share of the calls to `pods`; all 0.0 when there were none."""
    values = counts_over(counts, pods)
    total = sum(values)
    return {pod: (n / total if total else 0.0) for pod, n in zip(pods, values, strict=True)}


def expected_shares(weights: Mapping[str, int]) -> dict[str, float]:
    """weight ÷ sum of weights, per pod (DESIGN.md: every policy follows this)."""
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {dict(weights)}")
    return {pod: w / total for pod, w in weights.items()}


def max_share_error(observed: Mapping[str, float], expected: Mapping[str, float]) -> float:
    """The largest |observed − expected| share over the pods of `expected`."""
    return max(abs(observed.get(pod, 0.0) - share) for pod, share in expected.items())


def binomial_sd(share: float, n: int) -> float | None:
    """The sampling error of a share measured over n independent calls: sqrt(p(1−p)/n)."""
    if n <= 0:
        return None
    return math.sqrt(share * (1 - share) / n)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def lookup(report: Mapping[str, Any], path: Sequence[str]) -> Any:
    """report[path[0]][path[1]]...; None when any step is missing (a scenario not run)."""
    node: Any = report
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _met(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    if op == "<":
        return value < bound
    return value <= bound if op == "<=" else value == bound


def goals(report: Mapping[str, Any], engine: str = "embedded") -> dict[str, dict[str, Any]]:
    """Every goal of `engine` with its value, its bound and whether it is met (None: not
    measured); under HAProxy, the embedded engine's goals it cannot meet by design are listed
    with `met` None and the reason."""
    section: dict[str, dict[str, Any]] = {}
    for goal in GOALS:
        if engine not in goal.get("engines", ENGINES):
            continue
        value = lookup(report, goal["path"])
        if "ratio_of" in goal:
            value = rounded(ratio(value, lookup(report, goal["ratio_of"])))
        section[goal["name"]] = {
            "value": value,
            "goal": f"{goal['op']} {rounded(goal['bound'])}",
            "met": _met(value, goal["op"], goal["bound"]),
        }
        if engine == "haproxy" and goal["name"] in NOT_FOR_HAPROXY:
            section[goal["name"]] |= {"met": None, "applies": NOT_FOR_HAPROXY[goal["name"]]}
    if engine == "haproxy":
        section |= _least_request_figures(report)
    return section


def _least_request_figures(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """HAProxy's least_request under the latency-aware goal's bounds, reported only."""
    figures = {}
    for name, path, ratio_of, bound in HAPROXY_LEAST_REQUEST_FIGURES:
        value = lookup(report, path)
        if ratio_of is not None:
            value = rounded(ratio(value, lookup(report, ratio_of)))
        figures[name] = {
            "value": value,
            "goal": f"<= {rounded(bound)}",
            "met": None,
            "applies": "reported, not judged: least_request balances calls in flight, not"
            " latency (HAProxy has no latency-aware policy)",
        }
    return figures
