"""Weights from the pods' real load, as gRPC's weighted round robin computes them (A58),
but with the platform's CPU instead of ORCA reports (Python servers cannot send them).

Pure and Django-free: `AutoWeights.step` takes each pod's load over the last window
(`PodLoad`: calls/s, errors/s, CPU cores used) and returns the weight each pod should
get now, with its reason in words. Per pod, as gRPC's WRR:

- ``weight ∝ qps ÷ (utilisation + error_penalty × errors/qps)`` — calls per core, so a pod
  whose calls cost twice the CPU gets half the weight; the error term keeps a pod that
  fails fast (cheap errors) from looking efficient;
- weights stay within ten times the default either way (never 0: draining is the
  operator's word), as Ballast's weight range allows;
- a *blackout*: a pod's measured weight is used only after it has been measured for
  `blackout_s` (10 s) without a gap longer than `expiration_s`; until then, and after
  `expiration_s` (3 min) without a measurement, it has no auto weight (its default);
- the targets are scaled so their mean is the cluster's default weight (gRPC gives a
  pod without a weight the mean weight: here the default, which the mean equals).

What gRPC recomputes every second from fresh reports, a control loop on CPU samples
needs damped: the targets are smoothed (EWMA, `smoothing`), each weight moves at most
`max_step` (25 %) per interval, and a weight that moved less than `min_change` (10 %)
from the last one given is not given again (no churn, no audit flood).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from balancer.endpoint import MAX_WEIGHT

# gRPC A58's defaults (see ../shared/REFERENCES.md): blackout before a new weight is used,
# expiry of a weight without reports, and the error utilisation penalty.
BLACKOUT_S = 10.0
EXPIRATION_S = 180.0
ERROR_PENALTY = 1.0
# Damping for a loop on CPU samples (gRPC has none: ORCA reports are fresh every call).
SMOOTHING = 0.3  # the EWMA's weight of the newest target
MAX_STEP = 0.25  # at most ±25 % per interval
# A move under 10 % is not given (nor audited): on a shared node the CPU a call costs
# wanders by ±9 % over a minute (measured on the bench's busy machine), and an 8 % band
# let equal pods step back and forth by one band (109 → 100 → 109) on that drift alone.
MIN_CHANGE = 0.10
# Weight 0 takes a pod out: that is drain's job, never the controller's. Nor does it starve
# one: calls the balancer does not carry (clients pinned to the pod through an L4 Service)
# can keep its errors up whatever weight it gets, and each lower weight would then raise
# its error ratio further. So auto weights stay within this factor of the default.
WEIGHT_RANGE = 10.0
# Below this many calls/s or CPU cores a pod's figures are noise (CPU is sampled in 10 ms
# ticks): it keeps what it has.
MIN_QPS = 0.5
MIN_CORES = 0.005


@dataclass(frozen=True, slots=True)
class PodLoad:
    """One READY pod's load over the last window; None where it was not measured."""

    pod: str
    qps: float | None
    errors_s: float | None
    cores: float | None

    @property
    def measured(self) -> bool:
        return (
            self.qps is not None and self.qps >= MIN_QPS
            and self.cores is not None and self.cores >= MIN_CORES
        )  # fmt: skip

    def raw_weight(self, error_penalty: float) -> float:
        """qps ÷ (utilisation + penalty × error ratio): calls per core, errors penalised."""
        assert self.qps is not None and self.cores is not None
        error_ratio = min(1.0, (self.errors_s or 0.0) / self.qps)
        return self.qps / (self.cores + error_penalty * error_ratio)


@dataclass(frozen=True, slots=True)
class AutoWeightsConfig:
    """The controller's numbers; defaults from gRPC A58 and the damping above."""

    blackout_s: float = BLACKOUT_S
    expiration_s: float = EXPIRATION_S
    error_penalty: float = ERROR_PENALTY
    smoothing: float = SMOOTHING
    max_step: float = MAX_STEP
    min_change: float = MIN_CHANGE

    def __post_init__(self) -> None:
        for name in ("blackout_s", "expiration_s", "error_penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be 0 or a positive number, got {value!r}")
        for name in ("smoothing", "max_step", "min_change"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 1):
                raise ValueError(f"{name} must be above 0 and at most 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The weight a pod should have now (None: none of its own, the default), and why."""

    pod: str
    weight: int | None
    reason: str
    changed: bool  # differs from the weight it had (by more than `min_change`)
    was: int | None


@dataclass
class _Pod:
    measured_since_s: float | None = None  # gRPC's non_empty_since
    last_measured_s: float | None = None
    smoothed: float | None = None


@dataclass
class AutoWeights:
    """The controller's memory of one service's pods across intervals."""

    config: AutoWeightsConfig = field(default_factory=AutoWeightsConfig)
    _pods: dict[str, _Pod] = field(default_factory=dict)

    def reset(self) -> None:
        """Forgets every pod (autoweights turned off, or automation paused)."""
        self._pods.clear()

    def step(
        self,
        loads: Sequence[PodLoad],
        current: Mapping[str, int],
        default_weight: int,
        now_s: float,
    ) -> list[Decision]:
        """One interval: the decision for every pod of `loads` (the READY pods the
        controller may weigh), given the auto weights they have now (`current`; a pod
        missing there is at `default_weight`). Pods not in `loads` are forgotten."""
        # A pod first seen with a weight (the controller restarted) keeps it through its
        # blackout, as though just measured.
        self._pods = {
            load.pod: self._pods.get(load.pod) or _Pod(last_measured_s=_seen(current, load, now_s))
            for load in loads
        }
        targets = self._targets(loads, default_weight, now_s)
        return [
            self._decide(load, targets.get(load.pod), current.get(load.pod), default_weight, now_s)
            for load in loads
        ]

    def _targets(
        self, loads: Sequence[PodLoad], default_weight: int, now_s: float
    ) -> dict[str, float]:
        """Each pod out of blackout with a measurement: its raw weight scaled so that the
        mean over them is the default weight."""
        raw: dict[str, float] = {}
        for load in loads:
            if self._observe(load, now_s):
                raw[load.pod] = load.raw_weight(self.config.error_penalty)
        mean = sum(raw.values()) / len(raw) if raw else 0.0
        if len(raw) < 2 or mean <= 0:
            return {}  # one pod alone has nothing to be weighed against
        return {pod: default_weight * value / mean for pod, value in raw.items()}

    def _observe(self, load: PodLoad, now_s: float) -> bool:
        """Notes a measurement; True when the pod is out of its blackout."""
        pod = self._pods[load.pod]
        if (
            pod.last_measured_s is not None
            and now_s - pod.last_measured_s > self.config.expiration_s
        ):
            pod.measured_since_s = None  # expired: a new blackout, as gRPC's non_empty_since
            pod.smoothed = None
        if not load.measured:
            return False
        pod.last_measured_s = now_s
        if pod.measured_since_s is None:
            pod.measured_since_s = now_s
        return now_s - pod.measured_since_s >= self.config.blackout_s

    def _decide(
        self,
        load: PodLoad,
        target: float | None,
        was: int | None,
        default_weight: int,
        now_s: float,
    ) -> Decision:
        pod = self._pods[load.pod]
        if target is None:
            return self._unweighed(load, pod, was, now_s)
        now = float(was if was is not None else default_weight)
        smoothed = target if pod.smoothed is None else pod.smoothed
        smoothed += self.config.smoothing * (target - smoothed)
        pod.smoothed = smoothed
        bounded = min(
            max(smoothed, now * (1 - self.config.max_step)), now * (1 + self.config.max_step)
        )
        low = max(1, math.ceil(default_weight / WEIGHT_RANGE))
        high = min(MAX_WEIGHT, round(default_weight * WEIGHT_RANGE))
        weight = min(high, max(low, round(bounded)))
        if abs(weight - now) <= self.config.min_change * now:
            return Decision(load.pod, was, _reason(load, round(now), round(now)), False, was)
        return Decision(load.pod, weight, _reason(load, weight, round(now)), True, was)

    def _unweighed(self, load: PodLoad, pod: _Pod, was: int | None, now_s: float) -> Decision:
        """No target (in blackout, not measured, or no other pod to weigh it against): it
        keeps its weight, until `expiration_s` without a measurement drops it."""
        last = pod.last_measured_s
        if was is not None and (last is None or now_s - last > self.config.expiration_s):
            why = (
                f"pod {load.pod}: not measured for {self.config.expiration_s:g} s → default weight"
            )
            return Decision(load.pod, None, why, True, was)
        if not load.measured:
            why = "not measured (too few calls or too little CPU)"
        elif (
            pod.measured_since_s is not None
            and now_s - pod.measured_since_s < self.config.blackout_s
        ):
            measured_s = now_s - pod.measured_since_s
            why = f"new: measured for {measured_s:.0f} s of {self.config.blackout_s:g}"
        else:
            why = "no other measured pod to weigh it against"
        return Decision(load.pod, was, f"pod {load.pod}: {why}", False, was)


def _seen(current: Mapping[str, int], load: PodLoad, now_s: float) -> float | None:
    return now_s if load.pod in current else None


def _reason(load: PodLoad, weight: int, was: int) -> str:
    """'pod X: 0.91 cores at 120 rps → weight 70 (was 100)', errors when there are some."""
    errors = ""
    if load.qps and load.errors_s:
        errors = f", {100 * load.errors_s / load.qps:.1f} % errors"
    return (
        f"pod {load.pod}: {load.cores or 0:.2f} cores at {load.qps or 0:.0f} rps{errors}"
        f" → weight {weight} (was {was})"
    )
