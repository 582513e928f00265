"""Peak EWMA load estimate (linkerd2-proxy, tower `load/peak_ewma.rs`, finagle)."""

from __future__ import annotations

import math

DEFAULT_RTT_MS = 30.0
DECAY_S = 10.0
# linkerd's load biaser: a fast RESOURCE_EXHAUSTED or UNAVAILABLE must not make a pod look cheap.
FAILURE_PENALTY_MS = 5_000.0


class PeakEwma:
    """An RTT estimate that jumps up to a slower observation and decays towards faster ones.

    The prior (`default_rtt_ms`) matters: a new endpoint has no observations, and
    a tiny prior would make it look free, so every picker would flood it. The
    config validates a floor of 1 ms for that reason.

    With no observations the estimate decays towards zero (as tower's does), so
    an endpoint that was slow once is probed again after a few decay periods.
    """

    __slots__ = ("_decay_s", "_estimate_s", "_updated_s")

    def __init__(self, *, default_rtt_ms: float, decay_s: float, now_s: float) -> None:
        self._estimate_s = default_rtt_ms / 1000
        self._decay_s = decay_s
        self._updated_s = now_s

    def observe(self, rtt_s: float, now_s: float) -> None:
        """Folds one response time in: above the current estimate it becomes the
        estimate (the peak); below, it is averaged in with weight 1 − exp(−elapsed / decay).
        """
        elapsed = max(now_s - self._updated_s, 0.0)
        w = math.exp(-elapsed / self._decay_s)
        current = self._estimate_s * w  # = estimate_s(now_s)
        # old·w + rtt·(1 − w): the time-weighted EWMA, of which `current` is the old·w part.
        self._estimate_s = rtt_s if rtt_s > current else current + rtt_s * (1 - w)
        self._updated_s = now_s

    def estimate_s(self, now_s: float) -> float:
        """The estimate at `now_s`, decayed for the time since the last observation."""
        return self._decayed(now_s)

    def _decayed(self, now_s: float) -> float:
        elapsed = now_s - self._updated_s
        if elapsed <= 0:
            return self._estimate_s
        return self._estimate_s * math.exp(-elapsed / self._decay_s)


class FailureLoad:
    """Fast failures counted as calls in flight: the least_request side of linkerd's load biaser.

    Each failure adds one call that fades away with time constant `penalty_s`, so
    over time it weighs as much as one call that took `penalty_s` to answer (the
    penalty peak EWMA gives a failure as latency). A pod that refuses calls in a
    millisecond then costs more than its busy neighbours instead of looking idle,
    and is only tried again as its failures fade. `penalty_s` 0 turns it off.
    """

    __slots__ = ("_load", "_penalty_s", "_updated_s")

    def __init__(self, *, penalty_s: float, now_s: float) -> None:
        self._penalty_s = penalty_s
        self._load = 0.0
        self._updated_s = now_s

    def add(self, now_s: float) -> None:
        """Counts one failure at `now_s`."""
        if self._penalty_s > 0:
            self._load = self.value(now_s) + 1.0
            self._updated_s = now_s

    def value(self, now_s: float) -> float:
        """The failures' load at `now_s`: 0 when there were none (or long ago)."""
        if not self._load:
            return 0.0
        elapsed = now_s - self._updated_s
        if elapsed <= 0:
            return self._load
        return self._load * math.exp(-elapsed / self._penalty_s)
