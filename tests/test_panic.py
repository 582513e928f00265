"""Picking around dead and failing endpoints: fast failures as load for least_request,
Envoy's panic threshold, a channel in TRANSIENT_FAILURE, and a lone ejected endpoint."""

from __future__ import annotations

import logging
import random
from collections import Counter

import grpc
import pytest

from balancer.cluster import Cluster
from balancer.config import (
    ClusterConfig,
    ConfigError,
    HealthCheckConfig,
    OutlierDetectionConfig,
    config_from_dict,
)
from balancer.discovery import Reset
from balancer.endpoint import Address, Endpoint, State
from balancer.stats import CODE_INDEX

OK = CODE_INDEX[grpc.StatusCode.OK]
UNAVAILABLE = CODE_INDEX[grpc.StatusCode.UNAVAILABLE]
INTERNAL = CODE_INDEX[grpc.StatusCode.INTERNAL]
TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE


class FakeClock:
    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def make_cluster(names: list[str], clock: FakeClock | None = None, **config: object) -> Cluster:
    cluster = Cluster(
        ClusterConfig("c", **config),  # type: ignore[arg-type]
        clock=clock or FakeClock(),
        rng=random.Random(5),
        channel_factory=lambda address: object(),  # type: ignore[arg-type,return-value]
    )
    cluster.apply(Reset(tuple(Address("10.0.0.1", 5000 + i, pod_name=n)
                              for i, n in enumerate(names))))  # fmt: skip
    return cluster


def picks(cluster: Cluster, n: int = 2_000) -> Counter[str]:
    return Counter(ep.id for ep in (cluster.pick() for _ in range(n)) if ep is not None)


# --- failures count as load -------------------------------------------------------------


def steady_load(cluster: Cluster, clock: FakeClock, failing: str, steps: int = 4_000) -> float:
    """Share of picks for `failing`, which answers UNAVAILABLE in 1 ms; the others take
    20 ms, one call picked every 2.5 ms (8 in flight)."""
    in_flight: list[tuple[float, Endpoint, object]] = []
    chosen: Counter[str] = Counter()
    for _ in range(steps):
        clock.now_s += 0.0025
        while in_flight and in_flight[0][0] <= clock.now_s:
            _, done, call = in_flight.pop(0)
            cluster.record_result(done, OK, 0.020)
            done.finish(call, clock.now_s)  # type: ignore[arg-type]
        ep = cluster.pick()
        assert ep is not None
        chosen[ep.id] += 1
        if ep.id == failing:
            cluster.record_result(ep, UNAVAILABLE, 0.001)
        else:
            call = object()
            ep.begin(call)  # type: ignore[arg-type]
            in_flight.append((clock.now_s + 0.020, ep, call))
    return chosen[failing] / steps


@pytest.mark.parametrize("weights", [(100,) * 5, (100, 200, 100, 300, 100)])
def test_it_does_not_send_least_requests_calls_to_a_pod_failing_fast(weights):
    clock = FakeClock()
    # Outlier detection off: the load alone must steer calls away.
    cluster = make_cluster(["a", "b", "c", "d", "e"], clock, policy="least_request",
                           outlier_detection=OutlierDetectionConfig(enabled=False))  # fmt: skip
    for name, weight in zip("abcde", weights, strict=True):
        cluster.set_weight(name, weight)
    # Before: an endpoint without calls in flight won every pair it was in (~40 %).
    assert steady_load(cluster, clock, failing="a") < 0.03


def test_it_tries_a_failing_pod_again_once_its_failures_fade():
    clock = FakeClock()
    cluster = make_cluster(["a", "b"], clock, policy="least_request")
    ep = cluster.endpoints["a"]
    for _ in range(10):
        cluster.record_result(ep, UNAVAILABLE, 0.001)
    assert ep.failure_load.value(clock()) == pytest.approx(10)
    clock.now_s += 60  # 12 penalty periods of 5 s
    assert ep.failure_load.value(clock()) < 0.001


def test_it_does_not_count_application_errors_as_load():
    cluster = make_cluster(["a", "b"], policy="least_request")
    cluster.record_result(cluster.endpoints["a"], CODE_INDEX[grpc.StatusCode.NOT_FOUND], 0.001)
    assert cluster.endpoints["a"].failure_load.value(1_000.0) == 0


# --- TRANSIENT_FAILURE ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "peak_ewma", "random"])
def test_it_never_picks_an_endpoint_whose_channel_cannot_connect(policy):
    cluster = make_cluster(["a", "b", "c", "d", "e"], policy=policy)
    for name in ("a", "b"):
        cluster.set_connectivity(cluster.endpoints[name], TRANSIENT_FAILURE)
    assert set(picks(cluster)) == {"c", "d", "e"}
    ep = cluster.endpoints["a"]
    assert ep.state is State.UNHEALTHY
    assert ep.state_reason.startswith("cannot connect: channel in TRANSIENT_FAILURE")
    assert ep.connectivity == "TRANSIENT_FAILURE"


def test_it_keeps_a_reconnecting_endpoint_out_until_its_channel_is_ready():
    cluster = make_cluster(["a", "b"])
    ep = cluster.endpoints["a"]
    cluster.set_connectivity(ep, TRANSIENT_FAILURE)
    for state in (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING):
        cluster.set_connectivity(ep, state)
        assert ep.state is State.UNHEALTHY and set(picks(cluster, 50)) == {"b"}
    cluster.set_connectivity(ep, grpc.ChannelConnectivity.READY)
    assert ep.state is State.READY and ep.state_reason == "connected again (channel READY)"
    assert set(picks(cluster, 50)) == {"a", "b"}


def test_it_needs_both_health_and_a_connection_to_be_ready():
    cluster = make_cluster(["a", "b"], health_check=HealthCheckConfig(enabled=True))
    ep = cluster.endpoints["a"]
    cluster.set_connectivity(ep, TRANSIENT_FAILURE)
    cluster.set_healthy(ep, "health check passed")
    assert ep.state is State.UNHEALTHY and "TRANSIENT_FAILURE" in ep.state_reason
    cluster.set_unhealthy(ep, "health check failed: UNAVAILABLE")
    cluster.set_connectivity(ep, grpc.ChannelConnectivity.READY)
    assert ep.state is State.UNHEALTHY  # health still says no
    cluster.set_healthy(ep, "health check passed")
    assert ep.state is State.READY


def test_it_undrains_an_unreachable_endpoint_to_unhealthy():
    cluster = make_cluster(["a", "b"])
    cluster.drain("a")
    cluster.set_connectivity(cluster.endpoints["a"], TRANSIENT_FAILURE)
    assert cluster.endpoints["a"].state is State.DRAINED  # a drain stays the operator's
    assert cluster.undrain("a").state is State.UNHEALTHY


# --- the panic threshold ----------------------------------------------------------------


def test_it_routes_to_every_judged_endpoint_below_the_panic_threshold(caplog):
    cluster = make_cluster(["a", "b", "c", "d", "e"])
    for name in ("a", "b"):
        cluster.set_unhealthy(cluster.endpoints[name], "health check failed")
    assert not cluster.panic and set(picks(cluster)) == {"c", "d", "e"}
    with caplog.at_level(logging.WARNING, logger="balancer.cluster"):
        cluster.set_unhealthy(cluster.endpoints["c"], "health check failed")
    assert cluster.panic
    assert set(picks(cluster)) == {"a", "b", "c", "d", "e"}
    assert "panic: 2 of 5 endpoints READY, below the panic threshold of 50 %" in caplog.text
    cluster.set_healthy(cluster.endpoints["c"], "health check passed")
    assert not cluster.panic and "panic over: 3 of 5 endpoints READY" in caplog.text


def test_it_leaves_drained_endpoints_out_of_panic():
    cluster = make_cluster(["a", "b", "c", "d"])
    cluster.drain("a")
    for name in ("b", "c"):
        cluster.set_unhealthy(cluster.endpoints[name], "health check failed")
    assert cluster.panic  # 1 of the 3 not drained is READY
    assert set(picks(cluster)) == {"b", "c", "d"}


def test_it_leaves_endpoints_that_cannot_connect_out_of_panic():
    cluster = make_cluster(["a", "b", "c", "d"])
    cluster.set_connectivity(cluster.endpoints["a"], TRANSIENT_FAILURE)
    for name in ("b", "c"):
        cluster.set_unhealthy(cluster.endpoints[name], "health check failed")
    assert cluster.panic
    assert set(picks(cluster)) == {"b", "c", "d"}


def test_it_fails_calls_instead_when_the_panic_threshold_is_0():
    cluster = make_cluster(["a", "b"], panic_threshold_percent=0)
    for ep in cluster.endpoints.values():
        cluster.set_unhealthy(ep, "health check failed")
    assert not cluster.panic and cluster.pick() is None


@pytest.mark.parametrize("threshold", [-1, 101, float("nan")])
def test_it_refuses_a_panic_threshold_outside_0_to_100(threshold):
    data = {"clusters": [{"name": "c", "panic_threshold_percent": threshold}]}
    with pytest.raises(ConfigError, match=r"clusters\[0\][:.] ?panic_threshold_percent"):
        config_from_dict(data, environ={})


# --- a lone endpoint answering INTERNAL -------------------------------------------------


def fail(cluster: Cluster, ep: Endpoint, code: int, times: int) -> None:
    for _ in range(times):
        cluster.record_result(ep, code, 0.001)


def test_it_keeps_routing_to_a_lone_ejected_endpoint_as_envoy_does():
    cluster = make_cluster(["a"])
    ep = cluster.endpoints["a"]
    fail(cluster, ep, INTERNAL, 5)
    assert ep.state is State.EJECTED  # Envoy ejects even the last host...
    assert cluster.panic and cluster.pick() is ep  # ...and panic mode still routes to it


def test_it_stops_routing_to_a_lone_ejected_endpoint_without_panic_mode():
    cluster = make_cluster(["a"], panic_threshold_percent=0)
    fail(cluster, cluster.endpoints["a"], INTERNAL, 5)
    assert cluster.pick() is None
    assert "all 1 are EJECTED" in cluster.no_endpoint_reason()
