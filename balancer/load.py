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

    Two parts, so that one slow answer (a scheduling hiccup, a stall of the
    balancer itself) does not cost an equal pod seconds of traffic:

    - the average: linkerd's time-weighted EWMA (`decay_s`) of the answers, each
      counted at most `outlier_cap` × the average (0: no cap). A lone 1 s answer
      after a 1 s gap would otherwise add a tenth of a second to it; capped, it
      moves the average by at most ~10 %. A pod that stays slow is slow at every
      probe, and each probe raises its average, so it is still avoided;
    - the peak: a slower answer than the estimate becomes the estimate at once
      (the peak), and its excess over the average fades with `peak_decay_s`.

    A failure is not noise: its penalty (`observe(..., failure=True)`) is a floor
    under the estimate that fades over `decay_s`, as linkerd's peak does, uncapped.

    With `peak_decay_s` equal to `decay_s` (or above: it is capped) and no cap
    this is linkerd's estimate exactly.

    With no observations the estimate decays towards zero (as tower's does), so
    an endpoint that was slow once is probed again after a few decay periods.
    """

    __slots__ = (
        "_average_s", "_cap", "_decay_s", "_excess_s", "_failed_s", "_peak_decay_s", "_updated_s",
    )  # fmt: skip

    def __init__(
        self,
        *,
        default_rtt_ms: float,
        decay_s: float,
        now_s: float,
        peak_decay_s: float | None = None,
        outlier_cap: float = 0.0,
    ) -> None:
        self._average_s = default_rtt_ms / 1000
        self._excess_s = 0.0
        self._failed_s = 0.0
        self._decay_s = decay_s
        # A peak never outlasts the average it stands on: at most decay_s.
        self._peak_decay_s = decay_s if peak_decay_s is None else min(peak_decay_s, decay_s)
        self._cap = outlier_cap if outlier_cap > 0 else math.inf
        self._updated_s = now_s

    def observe(self, rtt_s: float, now_s: float, *, failure: bool = False) -> None:
        """Folds one response time in: the average takes it (at most `outlier_cap` × the
        average) with weight 1 − exp(−elapsed / decay); above the current estimate it
        becomes the estimate (the peak), its excess fading with `peak_decay_s` from then on.
        A `failure` (`rtt_s` is then the failure penalty) also floors the estimate at
        `rtt_s`, fading with `decay_s`.
        """
        elapsed = max(now_s - self._updated_s, 0.0)
        w = math.exp(-elapsed / self._decay_s)
        average = self._average_s * w
        excess = self._excess_s * math.exp(-elapsed / self._peak_decay_s)
        # old·w + rtt·(1 − w): the time-weighted EWMA, of which `average` is the old·w part.
        self._average_s = average + min(rtt_s, self._cap * average) * (1 - w)
        if rtt_s > average + excess:
            excess = rtt_s - self._average_s
        self._excess_s = excess
        self._failed_s = max(self._failed_s * w, rtt_s) if failure else self._failed_s * w
        self._updated_s = now_s

    def estimate_s(self, now_s: float) -> float:
        """The estimate at `now_s`, decayed for the time since the last observation."""
        elapsed = now_s - self._updated_s
        if elapsed <= 0:
            return max(self._average_s + self._excess_s, self._failed_s)
        w = math.exp(-elapsed / self._decay_s)
        estimate = self._average_s * w + self._excess_s * math.exp(-elapsed / self._peak_decay_s)
        return max(estimate, self._failed_s * w)


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
