"""Collector rate math against hand-built snapshots with known numbers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.admin.v1 import admin_pb2
from balancer.stats import LATENCY_BOUNDS_MS
from balancer.stats import quantile_ms as stats_quantile_ms
from dashboard.collector.rates import (
    EndpointRates,
    RateTracker,
    Sample,
    merge,
    rates,
    sample_from_snapshot,
)

BUCKETS = len(LATENCY_BOUNDS_MS) + 1
B_1_2MS = LATENCY_BOUNDS_MS.index(2)  # the bucket (1 ms, 2 ms]
B_7_10MS = LATENCY_BOUNDS_MS.index(10)
B_60_100MS = LATENCY_BOUNDS_MS.index(100)
T0 = 1_700_000_000_000


def histogram(at: dict[int, int]) -> list[int]:
    counts = [0] * BUCKETS
    for bucket, n in at.items():
        counts[bucket] = n
    return counts


def endpoint(
    endpoint_id: str,
    *,
    codes: dict[str, int] | None = None,
    rx: int = 0,
    tx: int = 0,
    latency: dict[int, int] | None = None,
    in_flight: int = 0,
    state: int = admin_pb2.ENDPOINT_STATE_READY,
    weight: int = 100,
    effective_weight: float = 100.0,
    pod_name: str = "",
) -> admin_pb2.EndpointSnapshot:
    counts = histogram(latency or {})
    return admin_pb2.EndpointSnapshot(
        endpoint_id=endpoint_id,
        pod_name=pod_name,
        state=state,
        weight=weight,
        effective_weight=effective_weight,
        in_flight=in_flight,
        requests_by_code=codes or {},
        requests_total=sum((codes or {}).values()),
        bytes_received=rx,
        bytes_sent=tx,
        latency=admin_pb2.Histogram(counts=counts, count=sum(counts)),
    )


def sample(
    taken_at_ms: int,
    *endpoints: admin_pb2.EndpointSnapshot,
    started_at_ms: int = T0 - 60_000,
    balancer_id: str = "b1",
    cluster: str = "svc",
) -> Sample:
    return sample_from_snapshot(
        admin_pb2.Snapshot(
            balancer_id=balancer_id,
            taken_at_unix_ms=taken_at_ms,
            started_at_unix_ms=started_at_ms,
            latency_bounds_ms=LATENCY_BOUNDS_MS,
            clusters=[admin_pb2.ClusterSnapshot(name=cluster, endpoints=list(endpoints))],
        )
    )


def one(result: dict[tuple[str, str], EndpointRates] | None, endpoint_id: str) -> EndpointRates:
    assert result is not None
    return result["svc", endpoint_id]


def test_it_derives_requests_errors_and_bytes_per_second():
    before = sample(T0, endpoint("pod-a", codes={"OK": 1_000, "UNAVAILABLE": 20}, rx=5_000))
    after = sample(
        T0 + 2_000,
        endpoint("pod-a", codes={"OK": 1_100, "UNAVAILABLE": 25}, rx=7_000, tx=10_000),
    )
    r = one(rates(before, after), "pod-a")
    assert r.rps == pytest.approx(52.5)
    assert r.errors_per_s == pytest.approx(2.5)
    assert r.rps_by_code == pytest.approx({"OK": 50.0, "UNAVAILABLE": 2.5})
    assert (r.bytes_in_per_s, r.bytes_out_per_s) == pytest.approx((1_000.0, 5_000.0))


def test_it_counts_every_code_but_ok_as_an_error():
    before = sample(T0, endpoint("pod-a", codes={"OK": 10}))
    after = sample(
        T0 + 1_000,
        endpoint("pod-a", codes={"OK": 14, "DEADLINE_EXCEEDED": 3, "INTERNAL": 1}),
    )
    r = one(rates(before, after), "pod-a")
    assert (r.rps, r.errors_per_s) == pytest.approx((8.0, 4.0))
    assert set(r.rps_by_code) == {"OK", "DEADLINE_EXCEEDED", "INTERNAL"}


def test_it_takes_percentiles_from_the_difference_of_histograms():
    # 1,000 old calls at 1–2 ms; in the interval, 10 more there and 90 at 7.5–10 ms.
    before = sample(T0, endpoint("pod-a", codes={"OK": 1_000}, latency={B_1_2MS: 1_000}))
    after = sample(
        T0 + 1_000,
        endpoint("pod-a", codes={"OK": 1_100}, latency={B_1_2MS: 1_010, B_7_10MS: 90}),
    )
    r = one(rates(before, after), "pod-a")
    delta = histogram({B_1_2MS: 10, B_7_10MS: 90})
    assert r.latency_counts == tuple(delta)
    assert r.p99_ms == stats_quantile_ms(delta, 0.99)
    assert r.p50_ms == stats_quantile_ms(delta, 0.50)
    assert r.p90_ms == stats_quantile_ms(delta, 0.90)
    assert r.p99_ms is not None and 7.5 < r.p99_ms <= 10
    # The cumulative histogram would have hidden the slowdown.
    cumulative = histogram({B_1_2MS: 1_010, B_7_10MS: 90})
    assert r.p50_ms != stats_quantile_ms(cumulative, 0.50)


def test_it_takes_gauges_and_state_from_the_later_snapshot():
    before = sample(T0, endpoint("pod-a", in_flight=9, weight=100, effective_weight=100))
    after = sample(
        T0 + 1_000,
        endpoint(
            "pod-a",
            in_flight=3,
            state=admin_pb2.ENDPOINT_STATE_DRAINING,
            weight=50,
            effective_weight=0.0,
        ),
    )
    r = one(rates(before, after), "pod-a")
    assert (r.in_flight, r.state, r.weight, r.effective_weight) == (3, "DRAINING", 50, 0.0)


def test_it_gives_no_percentiles_for_an_interval_without_requests():
    before = sample(T0, endpoint("pod-a", codes={"OK": 5}, latency={B_1_2MS: 5}))
    after = sample(T0 + 1_000, endpoint("pod-a", codes={"OK": 5}, latency={B_1_2MS: 5}))
    r = one(rates(before, after), "pod-a")
    assert (r.rps, r.errors_per_s, r.rps_by_code) == (0.0, 0.0, {})
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == (None, None, None)


@pytest.mark.parametrize("later_ms", [0, -500])
def test_it_gives_no_rates_without_elapsed_time(later_ms: int):
    before = sample(T0, endpoint("pod-a", codes={"OK": 5}))
    after = sample(T0 + later_ms, endpoint("pod-a", codes={"OK": 9}))
    assert rates(before, after) is None
    just_restarted = sample(T0 + 1_000, endpoint("pod-a"), started_at_ms=T0 + 1_000)
    assert rates(before, just_restarted) is None


def test_it_counts_from_zero_after_the_replica_restarted():
    before = sample(T0, endpoint("pod-a", codes={"OK": 5_000}, rx=900_000, latency={3: 5_000}))
    # Restarted 500 ms before the next snapshot: 20 calls since then.
    after = sample(
        T0 + 2_000,
        endpoint("pod-a", codes={"OK": 20}, rx=400, latency={B_7_10MS: 20}),
        started_at_ms=T0 + 1_500,
    )
    r = one(rates(before, after), "pod-a")
    assert r.rps == pytest.approx(40.0)  # 20 calls over the 0.5 s since the restart
    assert r.bytes_in_per_s == pytest.approx(800.0)
    assert r.latency_counts == tuple(histogram({B_7_10MS: 20}))


def test_it_counts_from_zero_when_a_counter_went_down():
    # Same replica, but the endpoint id was reused (host:port of a new pod).
    before = sample(T0, endpoint("10.0.0.7:50051", codes={"OK": 300}, tx=3_000))
    after = sample(T0 + 1_000, endpoint("10.0.0.7:50051", codes={"OK": 12}, tx=120))
    r = one(rates(before, after), "10.0.0.7:50051")
    assert (r.rps, r.bytes_out_per_s) == pytest.approx((12.0, 120.0))


def test_it_counts_a_new_endpoint_from_zero_and_drops_a_gone_one():
    before = sample(T0, endpoint("pod-old", codes={"OK": 50}))
    after = sample(T0 + 2_000, endpoint("pod-new", codes={"OK": 30, "UNAVAILABLE": 2}))
    result = rates(before, after)
    assert result is not None
    assert set(result) == {("svc", "pod-new")}
    assert (result["svc", "pod-new"].rps, result["svc", "pod-new"].errors_per_s) == (16.0, 1.0)


def test_it_reads_the_snapshot_message():
    s = sample(
        T0,
        endpoint("10.0.0.7:50051", state=admin_pb2.ENDPOINT_STATE_EJECTED),
        endpoint("pod-b", pod_name="pod-b"),
        balancer_id="replica-2",
    )
    assert (s.balancer_id, s.taken_at_unix_ms, s.latency_bounds_ms) == (
        "replica-2",
        T0,
        LATENCY_BOUNDS_MS,
    )
    assert s.endpoints["svc", "10.0.0.7:50051"].state == "EJECTED"
    assert s.endpoints["svc", "10.0.0.7:50051"].pod_name is None
    assert s.endpoints["svc", "pod-b"].pod_name == "pod-b"


class TestTracker:
    def test_it_needs_two_samples_for_an_interval(self):
        tracker = RateTracker()
        assert tracker.observe(sample(T0, endpoint("pod-a", codes={"OK": 1}))) is None
        r = one(tracker.observe(sample(T0 + 1_000, endpoint("pod-a", codes={"OK": 11}))), "pod-a")
        assert r.rps == 10.0

    def test_it_drops_a_repeated_snapshot_and_keeps_its_baseline(self):
        tracker = RateTracker()
        tracker.observe(sample(T0, endpoint("pod-a", codes={"OK": 0})))
        assert tracker.observe(sample(T0, endpoint("pod-a", codes={"OK": 5}))) is None
        r = one(tracker.observe(sample(T0 + 2_000, endpoint("pod-a", codes={"OK": 8}))), "pod-a")
        assert r.rps == 4.0

    def test_it_takes_a_restart_as_the_baseline_even_with_an_earlier_clock(self):
        tracker = RateTracker()
        tracker.observe(sample(T0, endpoint("pod-a", codes={"OK": 900})))
        restarted = sample(T0 - 100, endpoint("pod-a", codes={"OK": 2}), started_at_ms=T0 - 300)
        assert one(tracker.observe(restarted), "pod-a").rps == 10.0  # 2 calls in 200 ms
        later = sample(T0 + 900, endpoint("pod-a", codes={"OK": 12}), started_at_ms=T0 - 300)
        assert one(tracker.observe(later), "pod-a").rps == 10.0


def two_replicas(
    a: admin_pb2.EndpointSnapshot,
    b: admin_pb2.EndpointSnapshot,
    a_before: admin_pb2.EndpointSnapshot | None = None,
    b_before: admin_pb2.EndpointSnapshot | None = None,
) -> list[dict[tuple[str, str], EndpointRates]]:
    """Rates of two replicas over one second, each from zero unless told."""
    out = []
    for now, before, name in ((a, a_before, "b1"), (b, b_before, "b2")):
        old = sample(T0, *([before] if before else []), balancer_id=name)
        result = rates(old, sample(T0 + 1_000, now, balancer_id=name))
        assert result is not None
        out.append(result)
    return out


def test_it_adds_replicas_rates_and_in_flight():
    merged = merge(
        two_replicas(
            endpoint("pod-a", codes={"OK": 30}, rx=100, in_flight=2),
            endpoint("pod-a", codes={"OK": 10, "UNAVAILABLE": 5}, tx=50, in_flight=1),
        )
    )
    r = merged["svc", "pod-a"]
    assert (r.rps, r.errors_per_s, r.in_flight, r.replicas) == (45.0, 5.0, 3, 2)
    assert r.rps_by_code == {"OK": 40.0, "UNAVAILABLE": 5.0}
    assert (r.bytes_in_per_s, r.bytes_out_per_s) == (100.0, 50.0)


def test_it_merges_histograms_before_taking_the_percentile():
    # Replica 1 sends 1,000 fast calls; replica 2 ten slow ones.
    replicas = two_replicas(
        endpoint("pod-a", codes={"OK": 1_000}, latency={B_1_2MS: 1_000}),
        endpoint("pod-a", codes={"OK": 10}, latency={B_60_100MS: 10}),
    )
    r = merge(replicas)["svc", "pod-a"]
    expected = stats_quantile_ms(histogram({B_1_2MS: 1_000, B_60_100MS: 10}), 0.99)
    assert r.p99_ms == expected
    assert expected is not None and expected <= 2  # 99 % of the pod's calls were fast
    per_replica = [rs["svc", "pod-a"].p99_ms or 0.0 for rs in replicas]
    assert sum(per_replica) / 2 > 40  # what averaging the replicas' p99s would have shown


def test_it_shows_the_most_alarming_state_and_the_common_weight():
    replicas = two_replicas(
        endpoint("pod-a", weight=300, effective_weight=300.0),
        endpoint("pod-a", state=admin_pb2.ENDPOINT_STATE_EJECTED, effective_weight=0.0),
    )
    third = rates(
        sample(T0, balancer_id="b3"),
        sample(T0 + 1_000, endpoint("pod-a", weight=300, effective_weight=300.0)),
    )
    assert third is not None
    r = merge([*replicas, third])["svc", "pod-a"]
    assert (r.state, r.weight, r.effective_weight) == ("EJECTED", 300, 200.0)


def test_it_keeps_an_endpoint_one_replica_does_not_know():
    merged = merge(
        two_replicas(endpoint("pod-a", codes={"OK": 7}), endpoint("pod-b", codes={"OK": 3}))
    )
    assert {k: r.rps for k, r in merged.items()} == {("svc", "pod-a"): 7.0, ("svc", "pod-b"): 3.0}
    assert merged["svc", "pod-a"].replicas == 1


def test_it_adds_rates_but_not_latency_of_a_replica_with_other_bounds():
    first, second = two_replicas(
        endpoint("pod-a", codes={"OK": 10}, latency={B_1_2MS: 10}),
        endpoint("pod-a", codes={"OK": 10}, latency={B_60_100MS: 10}),
    )
    odd = {k: _with_bounds(r, (1.0, 2.0)) for k, r in second.items()}
    r = merge([first, odd])["svc", "pod-a"]
    assert r.rps == 20.0
    assert r.latency_counts == tuple(histogram({B_1_2MS: 10}))


def _with_bounds(r: EndpointRates, bounds: tuple[float, ...]) -> EndpointRates:
    return replace(r, latency_counts=(0, 10, 0), latency_bounds_ms=bounds)


def test_it_reads_quantiles_with_the_bounds_it_is_given():
    assert stats_quantile_ms([0, 4, 0], 0.5, (10.0, 20.0)) == 15.0
    assert stats_quantile_ms([0, 0, 4], 0.5, (10.0, 20.0)) == 20.0  # +Inf: the last bound
    assert stats_quantile_ms([0, 0, 0], 0.5, (10.0, 20.0)) is None


counters = st.fixed_dictionaries(
    {
        "codes": st.dictionaries(
            st.sampled_from(["OK", "UNAVAILABLE", "INTERNAL"]), st.integers(0, 99)
        ),
        "rx": st.integers(0, 99),
        "tx": st.integers(0, 99),
        "latency": st.dictionaries(st.integers(0, BUCKETS - 1), st.integers(0, 99)),
    }
)


@given(counters, counters, st.booleans())
def test_it_never_gives_negative_rates(
    before: dict[str, Any], after: dict[str, Any], restarted: bool
):
    old = sample(T0, endpoint("pod-a", **before))
    new = sample(
        T0 + 1_000, endpoint("pod-a", **after), started_at_ms=T0 + 500 if restarted else T0 - 60_000
    )
    r = one(rates(old, new), "pod-a")
    assert min(r.rps, r.errors_per_s, r.bytes_in_per_s, r.bytes_out_per_s, *r.latency_counts) >= 0
    assert all(v > 0 for v in r.rps_by_code.values())


def proxyless(endpoint_id: str, issued: int, errored: int = 0) -> admin_pb2.EndpointSnapshot:
    ep = endpoint(endpoint_id, codes={"OK": 500})
    ep.proxyless_requests_issued = issued
    ep.proxyless_requests_succeeded = issued - errored
    ep.proxyless_requests_errored = errored
    return ep


def test_it_derives_proxyless_requests_per_second_apart_from_the_proxys():
    before = sample(T0, proxyless("pod-a", 1_000, 10))
    after = sample(T0 + 2_000, proxyless("pod-a", 1_300, 14))
    r = one(rates(before, after), "pod-a")
    assert (r.proxyless_rps, r.proxyless_err_s) == pytest.approx((150.0, 2.0))
    assert r.rps == 0  # the proxy carried nothing in the interval


def test_it_counts_proxyless_calls_from_zero_when_their_counters_went_down():
    before = sample(T0, proxyless("pod-a", 1_000))
    after = sample(T0 + 1_000, proxyless("pod-a", 40))
    assert one(rates(before, after), "pod-a").proxyless_rps == pytest.approx(40.0)


def test_it_adds_up_proxyless_rates_over_replicas():
    a = rates(sample(T0, proxyless("pod-a", 0)), sample(T0 + 1_000, proxyless("pod-a", 30)))
    b = rates(
        sample(T0, proxyless("pod-a", 0), balancer_id="b2"),
        sample(T0 + 1_000, proxyless("pod-a", 12, 2), balancer_id="b2"),
    )
    assert a is not None and b is not None
    merged = merge([a, b])["svc", "pod-a"]
    assert (merged.proxyless_rps, merged.proxyless_err_s) == pytest.approx((42.0, 2.0))
