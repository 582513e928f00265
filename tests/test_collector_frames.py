"""The compact per-service frame: balancer rates joined with the platform's pod facts."""

from __future__ import annotations

import dataclasses
import json

from balancer.stats import LATENCY_BOUNDS_MS
from balancer.stats import quantile_ms as stats_quantile_ms
from dashboard.collector.frames import (
    FRAME_TYPE,
    ReplicaFrame,
    XdsFrame,
    build_frame,
    encode_frame,
    frame_size_bytes,
)
from dashboard.collector.rates import EndpointRates
from dashboard.collector.scrape import PodRates
from platforms.base import PodFacts

T = 1_700_000_000_000
BUCKETS = len(LATENCY_BOUNDS_MS) + 1
B_1_2MS = LATENCY_BOUNDS_MS.index(2)
B_60_100MS = LATENCY_BOUNDS_MS.index(100)
UP: list[ReplicaFrame] = [{"id": "b1", "up": True}, {"id": "b2", "up": False}]


def histogram(at: dict[int, int]) -> tuple[int, ...]:
    return tuple(at.get(i, 0) for i in range(BUCKETS))


def endpoint_rates(
    endpoint_id: str,
    rps: float = 100.0,
    *,
    errors_per_s: float = 0.0,
    state: str = "READY",
    weight: int = 100,
    latency: dict[int, int] | None = None,
    pod_name: str | None = None,
) -> EndpointRates:
    ok = rps - errors_per_s
    return EndpointRates(
        cluster="svc",
        endpoint_id=endpoint_id,
        pod_name=pod_name,
        rps=rps,
        errors_per_s=errors_per_s,
        rps_by_code={"OK": ok, "UNAVAILABLE": errors_per_s} if errors_per_s else {"OK": ok},
        bytes_in_per_s=rps * 120.4,
        bytes_out_per_s=rps * 2_048.6,
        in_flight=3,
        state=state,
        weight=weight,
        effective_weight=float(weight),
        latency_counts=histogram(latency if latency is not None else {B_1_2MS: round(rps)}),
        latency_bounds_ms=LATENCY_BOUNDS_MS,
    )


def pod_facts(name: str, **kwargs: object) -> PodFacts:
    fields: dict[str, object] = {
        "deployment": "svc",
        "address": None,
        "phase": "Running",
        "ready": True,
        "restart_count": 0,
        "started_at_s": 1_699_999_000.0,
        "cpu_millicores": 251.7,
        "memory_bytes": 180_000_000,
        "memory_limit_bytes": 256 * 2**20,
    }
    fields.update(kwargs)
    return PodFacts(name=name, **fields)  # type: ignore[arg-type]


def test_it_joins_a_pods_rates_and_facts_by_name():
    frame = build_frame(
        "svc",
        T,
        [endpoint_rates("pod-a", 100 / 3, errors_per_s=1 / 3, latency={B_1_2MS: 10})],
        [pod_facts("pod-a", restart_count=4, last_termination_reason="OOMKilled")],
        UP,
        pod_rates={"pod-a": PodRates(rps=52.3456, errors_per_s=0.5)},
    )
    assert (frame["type"], frame["service"], frame["t"], frame["replicas"]) == (
        FRAME_TYPE,
        "svc",
        T,
        UP,
    )
    p50 = stats_quantile_ms(histogram({B_1_2MS: 10}), 0.5)
    assert p50 is not None
    assert frame["pods"] == [
        {
            "pod": "pod-a",
            "color": 0,
            "state": "READY",
            "weight": 100,
            "eff_weight": 100.0,
            "rps": 33.33,
            "err_s": 0.33,
            "in_b_s": 4_013,
            "out_b_s": 68_287,
            "p50": round(p50, 2),
            "p90": 1.9,
            "p99": 1.99,
            "in_flight": 3,
            "phase": "Running",
            "ready": True,
            "cpu_m": 252,
            "mem": 180_000_000,
            "mem_limit": 268_435_456,
            "restarts": 4,
            "last_reason": "OOMKilled",
            "started": 1_699_999_000_000,
            "pod_rps": 52.35,
            "pod_err_s": 0.5,
            "lat": [0, 0, 0, 10],  # 10 calls in the 1–2 ms bucket, none slower
        }
    ]
    assert frame["lat_bounds_ms"] == list(LATENCY_BOUNDS_MS)


def test_it_shows_a_pod_the_balancer_does_not_route_to():
    frame = build_frame(
        "svc", T, [endpoint_rates("pod-a")], [pod_facts("pod-a"), pod_facts("pod-l4")], UP
    )
    assert [p["pod"] for p in frame["pods"]] == ["pod-a", "pod-l4"]
    l4 = frame["pods"][1]
    assert (l4["rps"], l4["state"], l4["p99"], l4["in_flight"]) == (None, None, None, None)
    assert (l4["cpu_m"], l4["ready"]) == (252, True)
    assert (l4["pod_rps"], l4["pod_err_s"]) == (None, None)  # no pod-reported rates given


def test_it_joins_an_address_endpoint_to_its_pod_and_keeps_an_unknown_one():
    frame = build_frame(
        "svc",
        T,
        [endpoint_rates("10.0.0.7:50051"), endpoint_rates("10.0.0.9:50051")],
        [pod_facts("pod-a", address="10.0.0.7:50051", cpu_millicores=None)],
        UP,
    )
    pods = {p["pod"]: p for p in frame["pods"]}
    assert set(pods) == {"10.0.0.7:50051", "10.0.0.9:50051"}
    assert (pods["10.0.0.7:50051"]["phase"], pods["10.0.0.7:50051"]["cpu_m"]) == ("Running", None)
    assert pods["10.0.0.9:50051"]["phase"] is None


def test_it_takes_total_percentiles_from_the_services_merged_histogram():
    frame = build_frame(
        "svc",
        T,
        [
            endpoint_rates("pod-a", 990, errors_per_s=9, latency={B_1_2MS: 990}),
            endpoint_rates("pod-b", 10, errors_per_s=1, latency={B_60_100MS: 10}),
            endpoint_rates("pod-c", 0, state="DRAINED", latency={}),
        ],
        [],
        UP,
    )
    totals = frame["totals"]
    merged = histogram({B_1_2MS: 990, B_60_100MS: 10})
    p99 = stats_quantile_ms(merged, 0.99)
    assert p99 is not None
    assert totals["p99"] == round(p99, 2)
    assert (totals["pods"], totals["ready"], totals["rps"], totals["err_s"]) == (3, 2, 1000, 10)
    assert totals["err_ratio"] == 0.01
    assert totals["in_flight"] == 9


def test_it_sends_null_ratios_for_a_service_without_traffic():
    frame = build_frame("svc", T, [endpoint_rates("pod-a", 0, latency={})], [], UP)
    assert (frame["totals"]["err_ratio"], frame["totals"]["p99"]) == (None, None)
    none = {"max_mean": None, "cv": None, "busiest": None, "flagged": False}
    assert frame["imbalance"] == frame["pod_imbalance"] == none
    assert frame["totals"]["pod_rps"] is None  # no pod reports


def test_it_stamps_each_pod_with_its_start_in_unix_ms():
    frame = build_frame(
        "svc",
        T,
        [endpoint_rates("pod-a")],
        [pod_facts("pod-b", started_at_s=1_700_000_000.25), pod_facts("pod-c", started_at_s=None)],
        UP,
    )
    started = {p["pod"]: p["started"] for p in frame["pods"]}
    assert started == {"pod-a": None, "pod-b": 1_700_000_000_250, "pod-c": None}


def test_it_flags_a_pinned_service():
    pinned = [
        endpoint_rates("pod-a", 400),
        endpoint_rates("pod-b", 50),
        endpoint_rates("pod-c", 50),
    ]
    frame = build_frame("svc", T, pinned, [], UP)
    assert frame["imbalance"]["busiest"] == "pod-a"
    assert frame["imbalance"]["max_mean"] == 2.4
    assert frame["imbalance"]["flagged"]


def test_it_scores_imbalance_by_weight_over_pods_in_rotation():
    frame = build_frame(
        "svc",
        T,
        [
            endpoint_rates("pod-a", 200, weight=200),
            endpoint_rates("pod-b", 100, weight=100),
            endpoint_rates("pod-c", 100, weight=100),
            endpoint_rates("pod-d", 0, state="DRAINING"),
        ],
        [],
        UP,
    )
    score = frame["imbalance"]
    assert (score["max_mean"], score["cv"], score["flagged"]) == (1.0, 0.0, False)


def test_it_flags_pods_that_report_a_skew_the_balancer_does_not_see():
    # Ballast spreads its share evenly; clients pinned through the L4 Service do not.
    carried = [endpoint_rates(name, 50) for name in ("pod-a", "pod-b", "pod-c")]
    pods = [pod_facts(name) for name in ("pod-a", "pod-b", "pod-c")]
    reported = {"pod-a": PodRates(450, 0), "pod-b": PodRates(50, 0), "pod-c": PodRates(50, 1)}
    frame = build_frame("svc", T, carried, pods, UP, pod_rates=reported)
    assert frame["imbalance"]["flagged"] is False
    assert frame["pod_imbalance"] == {
        "max_mean": 2.455,
        "cv": 1.029,
        "busiest": "pod-a",
        "flagged": True,
    }
    assert frame["totals"]["pod_rps"] == 550
    assert [p["pod_err_s"] for p in frame["pods"]] == [0, 0, 1]


def test_it_scores_pod_reported_load_unweighted_over_running_pods_that_report():
    pods = [
        pod_facts("pod-a"),
        pod_facts("pod-b"),
        pod_facts("pod-c"),
        pod_facts("pod-new", phase="Pending"),
        pod_facts("pod-quiet"),  # no figure yet
    ]
    reported = {
        "pod-a": PodRates(100, 0),
        "pod-b": PodRates(100, 0),
        "pod-c": PodRates(100, 0),
        "pod-new": PodRates(900, 0),
    }
    # Weights 200/100/100 would make pod-a's equal share look light; the pods' own
    # counts include traffic that ignores weights, so they are compared as they are.
    carried = [
        endpoint_rates("pod-a", 40, weight=200),
        endpoint_rates("pod-b", 20, weight=100),
        endpoint_rates("pod-c", 20, weight=100),
    ]
    frame = build_frame("svc", T, carried, pods, UP, pod_rates=reported)
    assert frame["pod_imbalance"] == {
        "max_mean": 1.0,
        "cv": 0.0,
        "busiest": "pod-a",
        "flagged": False,
    }
    assert frame["totals"]["pod_rps"] == 1200  # every pod that reports, whatever its phase


def test_it_joins_pod_reported_rates_to_an_endpoint_named_by_address():
    frame = build_frame(
        "svc",
        T,
        [endpoint_rates("10.0.0.7:50051")],
        [pod_facts("pod-a", address="10.0.0.7:50051")],
        UP,
        pod_rates={"pod-a": PodRates(12, 0)},
    )
    (pod,) = frame["pods"]
    assert (pod["pod"], pod["rps"], pod["pod_rps"]) == ("10.0.0.7:50051", 100, 12)
    assert frame["pod_imbalance"]["busiest"] == "10.0.0.7:50051"


def test_it_keeps_a_frame_of_twenty_busy_pods_small():
    rates = [
        endpoint_rates(f"svc-7d9f8c6b5-{i:05d}", 123.456 + i, errors_per_s=1.234) for i in range(20)
    ]
    pods = [pod_facts(f"svc-7d9f8c6b5-{i:05d}", restart_count=i) for i in range(20)]
    reported = {p.name: PodRates(234.567 + i, 1.234) for i, p in enumerate(pods)}
    frame = build_frame("svc", T, rates, pods, UP, pod_rates=reported)
    assert len(frame["pods"]) == 20
    # The latency buckets per pod add about 20 bytes a pod here, and the bounds 110.
    assert frame_size_bytes(frame) < 8_500
    assert json.loads(encode_frame(frame)) == frame


def test_a_pod_ramping_up_in_slow_start_is_not_flagged_for_taking_less() -> None:
    """Slow start gives a new pod a quarter of its weight for now: a quarter of the calls
    is what it should take."""
    ramping = dataclasses.replace(endpoint_rates("new", 25.0), effective_weight=25.0)
    rates = [endpoint_rates("a", 100.0), endpoint_rates("b", 100.0), ramping]
    frame = build_frame("svc", 1, rates, [], [])
    assert frame["imbalance"]["flagged"] is False
    assert frame["imbalance"]["max_mean"] == 1.0


def test_it_shows_proxyless_traffic_per_pod_and_in_total() -> None:
    rates = [
        dataclasses.replace(endpoint_rates("pod-a", 100), proxyless_rps=40.04, proxyless_err_s=1.0),
        dataclasses.replace(endpoint_rates("pod-b", 100), proxyless_rps=60.0),
        endpoint_rates("pod-c", 100),
    ]
    pods = [pod_facts("pod-a"), pod_facts("pod-b"), pod_facts("pod-c"), pod_facts("pod-d")]
    frame = build_frame("svc", T, rates, pods, UP)
    by_pod = {p["pod"]: p.get("px_rps") for p in frame["pods"]}
    # A pod without proxyless calls, or not routed to, carries no field at all.
    assert by_pod == {"pod-a": 40.0, "pod-b": 60.0, "pod-c": None, "pod-d": None}
    assert (frame["totals"]["px_rps"], frame["totals"]["px_err_s"]) == (100.04, 1)
    assert frame["totals"]["rps"] == 300  # the proxy's figure is its own


def test_it_does_not_count_proxyless_calls_as_bypassing_ballast() -> None:
    # pod-a handled 150/s: 100 through the proxy and 50 from proxyless clients.
    rates = [dataclasses.replace(endpoint_rates("pod-a", 100), proxyless_rps=50.0)]
    reported = {"pod-a": PodRates(150.0, 0.0)}
    frame = build_frame("svc", T, rates, [pod_facts("pod-a")], UP, pod_rates=reported)
    assert frame["totals"]["bypass_rps"] == 0


def test_it_carries_the_services_xds_clients_only_when_it_has_some() -> None:
    frame = build_frame("svc", T, [], [], UP, xds={"clients": 3, "in_sync": 2, "fallback": False})
    assert frame["xds"] == {"clients": 3, "in_sync": 2, "fallback": False}
    none: XdsFrame = {"clients": 0, "in_sync": 0, "fallback": False}
    assert "xds" not in build_frame("svc", T, [], [], UP, xds=none)


def test_it_keeps_a_frame_of_twenty_pods_with_proxyless_traffic_small() -> None:
    """Every pod busy on all three paths: the proxyless figures add about 250 bytes."""
    rates = [
        dataclasses.replace(
            endpoint_rates(f"svc-7d9f8c6b5-{i:05d}", 123.456 + i, errors_per_s=1.234),
            proxyless_rps=345.678 + i,
        )
        for i in range(20)
    ]
    pods = [pod_facts(f"svc-7d9f8c6b5-{i:05d}", restart_count=i) for i in range(20)]
    reported = {p.name: PodRates(234.567 + i, 1.234) for i, p in enumerate(pods)}
    xds: XdsFrame = {"clients": 12, "in_sync": 11, "fallback": False}
    frame = build_frame("svc", T, rates, pods, UP, pod_rates=reported, xds=xds)
    assert frame_size_bytes(frame) < 8_800
