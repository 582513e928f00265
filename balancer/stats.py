"""Per-endpoint statistics, cheap enough to record on every call.

Counters are cumulative (as Prometheus counters are); readers derive rates
from consecutive snapshots. The latency histogram has fixed bucket bounds so
snapshots from different balancer replicas can be added together.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import grpc

# Upper bounds of the latency buckets, in milliseconds; the last bucket is +Inf.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 40, 60, 100, 150, 250, 400, 600,
    1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
)  # fmt: skip
_BOUNDS_S = tuple(b / 1000 for b in LATENCY_BOUNDS_MS)

# grpc.StatusCode by its integer value (0..16), for indexing counters.
STATUS_CODES: tuple[grpc.StatusCode, ...] = tuple(
    sorted(grpc.StatusCode, key=lambda code: code.value[0])
)
CODE_INDEX: dict[grpc.StatusCode, int] = {code: code.value[0] for code in STATUS_CODES}


class EndpointStats:
    """Cumulative counters for one endpoint. `record` is the hot path: keep it lean."""

    __slots__ = ("bytes_received", "bytes_sent", "latency_counts", "latency_sum_s", "requests")

    def __init__(self) -> None:
        self.requests = [0] * len(STATUS_CODES)
        # Bytes received from clients (requests) and sent back to them (responses).
        self.bytes_received = 0
        self.bytes_sent = 0
        self.latency_counts = [0] * (len(_BOUNDS_S) + 1)
        self.latency_sum_s = 0.0

    def record(self, code_index: int, latency_s: float, received: int, sent: int) -> None:
        self.requests[code_index] += 1
        self.latency_counts[bisect_left(_BOUNDS_S, latency_s)] += 1
        self.latency_sum_s += latency_s
        self.bytes_received += received
        self.bytes_sent += sent

    def count(self, code_index: int, calls: int = 1) -> None:
        """Calls counted without a latency or bytes of their own (an engine that reads
        those elsewhere)."""
        self.requests[code_index] += calls

    def sample_latency(self, latency_s: float, weight: int) -> None:
        """One sampled call's latency standing in for `weight` calls (an engine that sees
        one call in `weight`); call counts are not touched."""
        self.latency_counts[bisect_left(_BOUNDS_S, latency_s)] += weight
        self.latency_sum_s += latency_s * weight

    @property
    def total_requests(self) -> int:
        return sum(self.requests)

    def requests_by_code(self) -> dict[str, int]:
        """Non-zero request counts keyed by status code name (`OK`, `UNAVAILABLE`, …)."""
        return {STATUS_CODES[i].name: n for i, n in enumerate(self.requests) if n}


def quantile_ms(
    counts: Sequence[int], q: float, bounds_ms: Sequence[float] = LATENCY_BOUNDS_MS
) -> float | None:
    """Estimates the q-quantile (0..1) in ms from histogram `counts` over `bounds_ms`.

    `counts` has one more bucket than `bounds_ms` (+Inf). Interpolates linearly
    inside the bucket, as Prometheus' histogram_quantile does. Returns None when
    the histogram is empty; a quantile in the +Inf bucket returns the last bound.
    Readers of another process's snapshot pass the bounds it sent.
    """
    total = sum(counts)
    if total == 0 or not bounds_ms:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds_ms):
                return bounds_ms[-1]
            lower = bounds_ms[i - 1] if i else 0.0
            return lower + (bounds_ms[i] - lower) * (rank - seen) / count
        seen += count
    return bounds_ms[-1]
