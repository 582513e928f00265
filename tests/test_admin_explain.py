"""The admin API's "why this share" fields (admin.proto 50-57, ClusterSnapshot 25), read
from a real balancer in front of real backends: one pod at full weight, one in slow
start, one drained and one ejected by outlier detection."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest

from balancer.admin.explain import expected_shares
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.server import Balancer
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.waiting import wait_for

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
WINDOW_S = 60.0
JUMP_S = 100.0  # the clock moves on this much, so pod-b alone is new when it comes back


class JumpingClock:
    """The monotonic clock, moved on by `jump`: pods then look long READY at once."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset_s

    def jump(self, seconds: float) -> None:
        self.offset_s += seconds


@dataclass
class Scene:
    balancer: Balancer
    admin: admin_pb2_grpc.AdminStub
    proxy: grpc.aio.Channel
    backends: dict[str, Backend]
    undrained_at_unix_s: float

    async def cluster(self) -> admin_pb2.ClusterSnapshot:
        snapshot = await self.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
        (cluster,) = snapshot.clusters
        return cluster

    async def endpoints(self) -> dict[str, admin_pb2.EndpointSnapshot]:
        return {ep.endpoint_id: ep for ep in (await self.cluster()).endpoints}

    async def calls(self, n: int) -> None:
        """`n` unary calls through the balancer; failures are the point of some."""
        call = self.proxy.unary_unary(be.UNARY)
        for _ in range(n):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call(b"ping", timeout=5)


@pytest.fixture
async def scene(
    backends: Callable[..., Awaitable[Backend]], balancers: Callable[..., Awaitable[Balancer]]
) -> AsyncIterator[Scene]:
    pods = {name: await backends(name) for name in ("pod-a", "pod-b", "pod-c", "pod-d")}
    clock = JumpingClock()
    cluster = {
        "slow_start": {"window_s": WINDOW_S},
        "outlier_detection": {"consecutive_failures": 3, "base_ejection_s": 300},
    }
    balancer = await balancers(config(list(pods.values()), admin={}, cluster=cluster), clock=clock)
    echo = balancer.clusters["echo"]
    await wait_for(
        lambda: all(ep.state.value == "READY" for ep in echo.endpoints.values()),
        what="every pod READY",
    )
    assert balancer.admin_address is not None
    async with (
        grpc.aio.insecure_channel(balancer.admin_address) as admin_channel,
        grpc.aio.insecure_channel(balancer.listen_addresses[0]) as proxy,
    ):
        admin = admin_pb2_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
        s = Scene(balancer, admin, proxy, pods, 0.0)
        # pod-d fails every call: outlier detection ejects it.
        pods["pod-d"].fail_with = grpc.StatusCode.UNAVAILABLE
        for _ in range(100):
            await s.calls(4)
            if echo.endpoints["pod-d"].state.value == "EJECTED":
                break
        assert echo.endpoints["pod-d"].state.value == "EJECTED"
        # pod-c drained; pod-b drained and back after the clock moved on: it ramps up.
        for pod in ("pod-b", "pod-c"):
            drain = admin_pb2.DrainRequest(cluster="echo", endpoint_id=pod)
            await admin.Drain(drain, metadata=AUTH)
        clock.jump(JUMP_S)
        s.undrained_at_unix_s = time.time()
        request = admin_pb2.UndrainRequest(cluster="echo", endpoint_id="pod-b")
        await admin.Undrain(request, metadata=AUTH)
        yield s


async def test_it_explains_slow_start_with_its_factor_and_end(scene: Scene) -> None:
    b = (await scene.endpoints())["pod-b"]
    assert b.state == admin_pb2.ENDPOINT_STATE_READY
    assert 0.1 <= b.slow_start_factor < 0.5
    assert b.effective_weight == pytest.approx(b.weight * b.slow_start_factor)
    assert b.HasField("slow_start_ends_unix_ms")
    ends_s = b.slow_start_ends_unix_ms / 1000
    assert scene.undrained_at_unix_s + WINDOW_S - 1 < ends_s < time.time() + WINDOW_S + 1
    a = (await scene.endpoints())["pod-a"]
    assert a.slow_start_factor == 1.0
    assert not a.HasField("slow_start_ends_unix_ms")


async def test_it_gives_each_endpoint_its_expected_share_from_the_effective_weights(
    scene: Scene,
) -> None:
    eps = await scene.endpoints()
    a, b, c, d = (eps[p] for p in ("pod-a", "pod-b", "pod-c", "pod-d"))
    assert c.state == admin_pb2.ENDPOINT_STATE_DRAINED and c.expected_share == 0.0
    assert d.state == admin_pb2.ENDPOINT_STATE_EJECTED and d.expected_share == 0.0
    total = a.effective_weight + b.effective_weight
    assert a.expected_share == pytest.approx(a.effective_weight / total)
    assert b.expected_share == pytest.approx(b.effective_weight / total)
    assert sum(ep.expected_share for ep in eps.values()) == pytest.approx(1.0)
    assert (await scene.cluster()).share_basis == "weights"


async def test_it_keeps_the_ejection_history_with_its_reason(scene: Scene) -> None:
    d = (await scene.endpoints())["pod-d"]
    assert d.ejections_total == 1
    assert d.ejection_multiplier == 1
    assert d.HasField("last_ejected_unix_ms")
    # Before the clock moved on by JUMP_S, so that much earlier in unix time.
    ejected_s = d.last_ejected_unix_ms / 1000
    assert time.time() - JUMP_S - 60 < ejected_s < scene.undrained_at_unix_s - JUMP_S + 1
    assert d.last_ejection_reason == "3 consecutive failures; ejected for 300 s"
    assert (await scene.endpoints())["pod-a"].last_ejection_reason == ""
    assert not (await scene.endpoints())["pod-a"].HasField("last_ejected_unix_ms")


async def test_it_names_the_load_each_policy_compares(scene: Scene) -> None:
    async def set_policy(policy: str) -> None:
        request = admin_pb2.SetPolicyRequest(cluster="echo", policy=policy)
        await scene.admin.SetPolicy(request, metadata=AUTH)

    await set_policy("least_request")
    d = (await scene.endpoints())["pod-d"]
    # Its fast failures weigh as calls in flight: a pod failing fast must not look idle.
    assert d.fast_failure_load > 0
    assert d.load == pytest.approx(d.in_flight + d.fast_failure_load, rel=1e-3)
    assert (await scene.cluster()).share_basis == "weights at equal load"

    await set_policy("peak_ewma")
    eps = await scene.endpoints()
    a, d = eps["pod-a"], eps["pod-d"]
    assert a.load == pytest.approx(a.ewma_latency_ms * (a.in_flight + 1))
    # A failure counts as the 5 s penalty: far slower than the fastest routed pod.
    assert d.latency_penalty > 10
    assert min(eps["pod-a"].latency_penalty, eps["pod-b"].latency_penalty) == 1.0


def test_expected_shares_follow_the_weights_and_ignore_zero() -> None:
    assert expected_shares({"a": 300, "b": 100, "c": 0}) == {"a": 0.75, "b": 0.25, "c": 0.0}
    assert expected_shares({"a": 0.0}) == {"a": 0.0}
