"""The latency distribution per pod in the frames: each pod's calls per latency bucket
over the interval (the difference of two snapshots' cumulative histograms, replicas
added up), and the buckets' bounds once per frame; nothing in a frame grows with time."""

from __future__ import annotations

from balancer.stats import LATENCY_BOUNDS_MS
from dashboard.collector.frames import build_frame, frame_size_bytes
from dashboard.collector.rates import (
    EndpointCounters,
    EndpointRates,
    RateTracker,
    Sample,
    merge,
)

BUCKETS = len(LATENCY_BOUNDS_MS) + 1
B_5MS = LATENCY_BOUNDS_MS.index(5)
B_100MS = LATENCY_BOUNDS_MS.index(100)
STARTED_MS = 1_700_000_000_000


def counters(pod: str, calls: int, at: dict[int, int]) -> EndpointCounters:
    return EndpointCounters(
        cluster="svc", endpoint_id=pod, pod_name=pod, state="READY", weight=100,
        effective_weight=100.0, in_flight=0, requests_by_code={"OK": calls},
        bytes_received=calls * 10, bytes_sent=calls * 10,
        latency_counts=tuple(at.get(i, 0) for i in range(BUCKETS)),
    )  # fmt: skip


def sample(replica: str, t_ms: int, pods: dict[str, dict[int, int]]) -> Sample:
    """A replica's snapshot: cumulative calls per bucket for each pod."""
    return Sample(
        balancer_id=replica,
        taken_at_unix_ms=t_ms,
        started_at_unix_ms=STARTED_MS,
        latency_bounds_ms=LATENCY_BOUNDS_MS,
        endpoints={("svc", pod): counters(pod, sum(at.values()), at) for pod, at in pods.items()},
    )


def interval(
    tracker: RateTracker, replica: str, before: dict[str, dict[int, int]],
    after: dict[str, dict[int, int]],
) -> dict[tuple[str, str], EndpointRates]:  # fmt: skip
    tracker.observe(sample(replica, STARTED_MS + 1_000, before))
    found = tracker.observe(sample(replica, STARTED_MS + 2_000, after))
    assert found is not None
    return found


def test_it_sends_each_pods_calls_per_latency_bucket_over_the_interval() -> None:
    b1 = interval(
        RateTracker(), "b1",
        {"pod-a": {B_5MS: 100}, "pod-b": {B_5MS: 50}, "pod-idle": {B_5MS: 7}},
        {"pod-a": {B_5MS: 130, B_100MS: 4}, "pod-b": {B_5MS: 60}, "pod-idle": {B_5MS: 7}},
    )  # fmt: skip
    b2 = interval(RateTracker(), "b2", {"pod-a": {B_5MS: 1}}, {"pod-a": {B_5MS: 3, B_100MS: 1}})
    frame = build_frame("svc", STARTED_MS + 2_000, merge([b1, b2]).values(), [], [])
    lat = {p["pod"]: p.get("lat") for p in frame["pods"]}
    # The interval's calls, both replicas added up, cut after the slowest bucket used.
    assert lat["pod-a"] == [0] * B_5MS + [32] + [0] * (B_100MS - B_5MS - 1) + [5]
    assert lat["pod-b"] == [0] * B_5MS + [10]
    assert lat["pod-idle"] is None  # no call in the interval: no field
    assert frame["lat_bounds_ms"] == list(LATENCY_BOUNDS_MS)
    assert frame["pods"][0]["p99"] is not None  # the quantiles stay


def test_a_frame_without_calls_carries_no_latency_buckets() -> None:
    idle = interval(RateTracker(), "b1", {"pod-a": {B_5MS: 7}}, {"pod-a": {B_5MS: 7}})
    frame = build_frame("svc", STARTED_MS + 2_000, idle.values(), [], [])
    assert "lat" not in frame["pods"][0]
    assert "lat_bounds_ms" not in frame


def test_the_frames_do_not_grow_with_time() -> None:
    """An hour of a busy replica's snapshots, calls in every bucket: each frame holds one
    list of at most 24 buckets per pod, the same size as the first."""
    tracker = RateTracker()
    every = {i: 0 for i in range(BUCKETS)}
    sizes = []
    for second in range(3_600):
        every = {i: n + 1_000 for i, n in every.items()}
        found = tracker.observe(sample("b1", STARTED_MS + second * 1_000, {"pod-a": every}))
        if found is None:
            continue
        frame = build_frame("svc", STARTED_MS + second * 1_000, found.values(), [], [])
        assert frame["pods"][0].get("lat") == [1_000] * BUCKETS
        sizes.append(frame_size_bytes(frame))
    assert max(sizes) == min(sizes) < 1_300
