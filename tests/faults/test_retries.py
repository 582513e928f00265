"""Retries against real demo-workload pods (processes): a pod failing 30 % of its calls,
and a pod frozen then killed with calls queued on it. Run with `-s` to see the figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc
import grpc.aio
import pytest

from balancer.config import BalancerConfig, config_from_dict
from balancer.endpoint import State
from tests.support.balancing import ADMIN_TOKEN
from tests.support.pods_killed import GET_ITEM, REQUEST, Traffic, WorkloadPod, start_pod, stop_pods
from tests.support.retries import by_pod, snapshot
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

SLOW_S = 60.0
CALLS = 3000


def balancer_config(pods: Sequence[WorkloadPod], **cluster: Any) -> BalancerConfig:
    """Defaults but for the admin API and what `cluster` sets."""
    endpoints = [{"address": p.address, "name": p.name} for p in pods]
    data = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0", "token": ADMIN_TOKEN},
        "clusters": [{"name": "inventory", "discovery": {"endpoints": endpoints}, **cluster}],
    }
    return config_from_dict(data, environ={})


async def test_it_absorbs_a_pod_failing_30_percent_within_the_budget(balancers) -> None:
    pods = [await start_pod(f"pod-{i}", "--latency-ms", "2") for i in range(4)]
    pods.append(await start_pod("pod-4", "--latency-ms", "2", "--error-rate", "0.3"))
    try:
        balancer = await balancers(balancer_config(pods, retry={"idempotent_methods": [GET_ITEM]}))
        traffic = Traffic(balancer.listen_addresses[0], clients=8)
        traffic.start()
        try:
            await wait_for(lambda: len(traffic.results) >= CALLS, 240, f"{CALLS} calls")
        finally:
            await traffic.stop()
        cluster = await snapshot(balancer)
    finally:
        await stop_pods(pods)
    calls = len(traffic.results)
    errors = sum(traffic.errors().values())
    bad = by_pod(cluster)["pod-4"]
    figures = {
        "calls": calls, "errors": errors, "error_rate": errors / calls,
        "retries": cluster.retries_total, "retries_succeeded": cluster.retries_succeeded_total,
        "retries_per_call": cluster.retries_total / calls,
        "failed_at_pod_4": bad.requests_by_code.get("UNAVAILABLE", 0),
    }  # fmt: skip
    print("retries_30_percent", json.dumps(figures))
    assert errors / calls < 0.001, figures
    assert bad.retries_total > 0, figures
    # Linkerd's budget: 20 % of the calls plus 10 a second over 10 s.
    assert cluster.retries_total <= 0.2 * calls + 100, figures
    # Retried calls in flight when the clients stopped (at most one per client) never ended.
    assert cluster.retries_succeeded_total >= cluster.retries_total - errors - 8, figures


async def test_it_retries_calls_a_frozen_pod_never_answered_even_if_not_idempotent(
    balancers,
) -> None:
    """SIGSTOP, calls queue on the frozen pod (its socket takes them), SIGKILL: the
    connection is reset before any answer, so the pod never saw them: each is retried
    on the other pod, though GetItem is not declared idempotent."""
    pods = [await start_pod(f"pod-{i}") for i in range(2)]
    frozen = pods[0]
    try:
        balancer = await balancers(balancer_config(pods, policy="round_robin"))
        cluster = balancer.clusters["inventory"]
        await wait_for(
            lambda: all(ep.connectivity == "READY" for ep in cluster.endpoints.values()),
            SLOW_S, "both channels connected",
        )  # fmt: skip
        os.killpg(frozen.process.pid, signal.SIGSTOP)
        async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
            get = channel.unary_unary(GET_ITEM)
            calls = [asyncio.ensure_future(get(REQUEST, timeout=30)) for _ in range(10)]
            stuck = cluster.endpoints["pod-0"]
            await wait_for(lambda: stuck.in_flight >= 5, SLOW_S, "calls queued on pod-0")
            frozen.kill()
            results = await asyncio.gather(*calls, return_exceptions=True)
        await wait_for(lambda: stuck.state is not State.READY, SLOW_S)
        snap = by_pod(await snapshot(balancer))
    finally:
        frozen.kill()
        await stop_pods(pods)
    codes = Counter(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    print(
        "retries_frozen_pod", json.dumps({"codes": codes, "retries": snap["pod-0"].retries_total})
    )
    assert codes == {"OK": 10}
    assert snap["pod-0"].retries_total == snap["pod-0"].retries_succeeded_total >= 5


@pytest.mark.parametrize("max_attempts", [2, 1])
async def test_it_has_haproxy_retry_calls_a_frozen_pod_never_answered(
    balancers, max_attempts: int
) -> None:
    """The same through the HAProxy engine: `retry-on conn-failure empty-response` sends the
    calls the frozen, then killed, pod never answered to the other pod; without retries
    (max_attempts 1: `retries 0`) they fail."""
    pods = [await start_pod(f"pod-{i}") for i in range(2)]
    frozen = pods[0]
    try:
        config = balancer_config(pods, policy="round_robin", retry={"max_attempts": max_attempts})
        balancer = await balancers(replace(config, engine="haproxy", shutdown_grace_s=1.0))
        async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
            get = channel.unary_unary(GET_ITEM)
            for _ in range(10):  # HAProxy has connections to both pods
                await get(REQUEST, timeout=10)
            os.killpg(frozen.process.pid, signal.SIGSTOP)
            calls = [asyncio.ensure_future(get(REQUEST, timeout=30)) for _ in range(10)]
            held = lambda: balancer.engine.figures().in_flight.get(("inventory", "pod-0"), 0)  # noqa: E731
            await wait_for(lambda: held() >= 5, SLOW_S, "HAProxy's calls held on pod-0")
            frozen.kill()
            results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        frozen.kill()
        await stop_pods(pods)
    codes = Counter(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    print("retries_haproxy_frozen_pod", max_attempts, json.dumps(codes))
    if max_attempts == 2:
        assert codes == {"OK": 10}
    else:
        assert codes["OK"] < 10
