"""Active health checks and passive outlier detection, against real backends."""

from __future__ import annotations

from collections import Counter

import grpc
import grpc.aio
import pytest

from balancer.endpoint import State
from tests.support import backend as be
from tests.support.balancing import config
from tests.support.waiting import wait_for

HEALTH = {"enabled": True, "interval_s": 0.05, "timeout_s": 0.5, "unhealthy_threshold": 2}


async def _served_by(channel, n):
    served = Counter()
    for _ in range(n):
        call = channel.unary_unary(be.UNARY)(b"x", timeout=5)
        try:
            await call
        except grpc.aio.AioRpcError as err:
            served[err.code().name] += 1
            continue
        served[dict(await call.initial_metadata())["x-backend"]] += 1
    return served


def _state(balancer, endpoint_id):
    return balancer.clusters["echo"].endpoints[endpoint_id].state


async def test_it_routes_only_after_a_health_check_passes(backends, balancers):
    a = await backends("pod-a")
    await a.set_serving(False)
    balancer = await balancers(config([a], cluster={"health_check": HEALTH}))
    await wait_for(lambda: _state(balancer, "pod-a") is State.UNHEALTHY, what="UNHEALTHY")
    await a.set_serving(True)
    await wait_for(lambda: _state(balancer, "pod-a") is State.READY, what="READY")


async def test_it_takes_a_not_serving_pod_out_and_back(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], cluster={"health_check": HEALTH}))
    await wait_for(lambda: _state(balancer, "pod-a") is State.READY, what="READY")
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        await a.set_serving(False)
        await wait_for(lambda: _state(balancer, "pod-a") is State.UNHEALTHY, what="UNHEALTHY")
        assert await _served_by(channel, 10) == Counter({"pod-b": 10})
        await a.set_serving(True)
        await wait_for(lambda: _state(balancer, "pod-a") is State.READY, what="READY again")
        assert (await _served_by(channel, 10))["pod-a"] == 5


async def test_it_marks_a_stopped_backend_unhealthy(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], cluster={"health_check": HEALTH}))
    await wait_for(lambda: _state(balancer, "pod-a") is State.READY, what="READY")
    await a.stop()
    await wait_for(lambda: _state(balancer, "pod-a") is State.UNHEALTHY, what="UNHEALTHY")
    reason = balancer.clusters["echo"].endpoints["pod-a"]
    assert reason.state is State.UNHEALTHY


OUTLIER = {"consecutive_failures": 3, "interval_s": 0.05, "base_ejection_s": 0.5}


async def test_it_ejects_a_failing_pod_and_returns_it_after_the_ejection_time(backends, balancers):
    pods = [await backends(f"pod-{i}") for i in range(3)]
    balancer = await balancers(config(pods, cluster={"outlier_detection": OUTLIER}))
    pods[0].fail_with = grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        served = await _served_by(channel, 30)
        # Round robin sent pod-0 its share until its third failure, then nothing.
        assert served["UNAVAILABLE"] == 3
        assert _state(balancer, "pod-0") is State.EJECTED
        assert await _served_by(channel, 10) == Counter({"pod-1": 5, "pod-2": 5})
        pods[0].fail_with = None
        await wait_for(lambda: _state(balancer, "pod-0") is State.READY, what="back to READY")
        assert (await _served_by(channel, 30))["pod-0"] == 10
    assert balancer.clusters["echo"].endpoints["pod-0"].ejections_total == 1


async def test_it_ejects_no_more_than_the_cap(backends, balancers):
    pods = [await backends(f"pod-{i}") for i in range(3)]
    balancer = await balancers(config(pods, cluster={"outlier_detection": OUTLIER}))
    for pod in pods:
        pod.fail_with = grpc.StatusCode.INTERNAL
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        served = await _served_by(channel, 30)
    assert served == Counter({"INTERNAL": 30})
    states = Counter(ep.state for ep in balancer.clusters["echo"].endpoints.values())
    # 10 % of 3 rounds down to 0, but one ejection is always allowed (Envoy).
    assert states == Counter({State.READY: 2, State.EJECTED: 1})


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"])
async def test_it_does_not_count_client_errors_or_overload_as_outliers(backends, balancers, code):
    pods = [await backends(f"pod-{i}") for i in range(2)]
    balancer = await balancers(config(pods, cluster={"outlier_detection": OUTLIER}))
    pods[0].fail_with = grpc.StatusCode[code]
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        await _served_by(channel, 20)
    assert _state(balancer, "pod-0") is State.READY


async def test_it_keeps_an_undrained_pod_out_while_its_health_checks_fail(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], cluster={"health_check": HEALTH}))
    await wait_for(lambda: _state(balancer, "pod-a") is State.READY, what="READY")
    cluster = balancer.clusters["echo"]
    cluster.drain("pod-a")
    await a.set_serving(False)
    await wait_for(lambda: not cluster.endpoints["pod-a"].healthy, what="checks failing")
    assert _state(balancer, "pod-a") is State.DRAINED  # the operator's state stands

    cluster.undrain("pod-a")
    assert _state(balancer, "pod-a") is State.UNHEALTHY
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await _served_by(channel, 6) == Counter({"pod-b": 6})
    await a.set_serving(True)
    await wait_for(lambda: _state(balancer, "pod-a") is State.READY, what="READY once healthy")
