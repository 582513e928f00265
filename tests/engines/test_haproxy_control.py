"""The admin API and health checks steer a real HAProxy: weights, drain, policy, health."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc
import grpc.aio
import psutil
import pytest

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import Route
from balancer.server import Balancer
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
HAPROXY = {"engine": "haproxy", "shutdown_grace_s": 1}


@dataclass
class Setup:
    a: Backend
    b: Backend
    balancer: Balancer
    admin: admin_pb2_grpc.AdminStub
    proxy: grpc.aio.Channel

    async def call(self, **metadata: str) -> str:
        """One unary call through HAProxy; the name of the backend that served it."""
        md = [(k.replace("_", "-"), v) for k, v in metadata.items()]
        call = self.proxy.unary_unary(be.UNARY)(b"ping", metadata=md, timeout=30)
        await call
        return str(dict(await call.initial_metadata())["x-backend"])

    async def served_by(self, n: int) -> Counter[str]:
        return Counter([await self.call() for _ in range(n)])

    async def state(self, endpoint_id: str) -> int:
        snapshot = await self.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
        (cluster,) = snapshot.clusters
        return next(ep.state for ep in cluster.endpoints if ep.endpoint_id == endpoint_id)

    async def until_only(self, name: str, n: int = 20) -> None:
        """Polls until `n` calls in a row all go to `name` (the change reached HAProxy)."""

        async def only() -> bool:
            return set(await self.served_by(n)) == {name}

        await _until(only, what=f"{n} calls in a row served by {name}")


async def _until(check, timeout_s: float = 20.0, what: str = "") -> None:
    """Polls the async `check` until true; a failing call counts as not yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            if await check():
                return
        except grpc.aio.AioRpcError:
            pass
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def setup(backends, balancers) -> AsyncIterator[Setup]:
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], admin={}, **HAPROXY))
    admin_channel = grpc.aio.insecure_channel(balancer.admin_address)
    proxy = grpc.aio.insecure_channel(balancer.listen_addresses[0])
    yield Setup(a, b, balancer, admin_pb2_grpc.AdminStub(admin_channel), proxy)
    await admin_channel.close()
    await proxy.close()


async def test_it_spreads_calls_of_one_connection_over_both_pods(setup):
    served = await setup.served_by(40)
    assert served == Counter({"pod-a": 20, "pod-b": 20})


async def test_it_follows_a_weight_set_through_the_admin_api(setup):
    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-b", weight=0)
    await setup.admin.SetWeight(request, metadata=AUTH)
    await setup.until_only("pod-a")
    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-b", weight=300)
    await setup.admin.SetWeight(request, metadata=AUTH)

    async def weighted() -> bool:
        return (await setup.served_by(8))["pod-b"] == 6  # 85 : 256 in HAProxy, smooth

    await _until(weighted, what="pod-b taking three calls of four")
    served = await setup.served_by(200)
    assert 140 <= served["pod-b"] <= 160, served


async def test_it_drains_and_undrains_through_the_admin_api(setup):
    drain = admin_pb2.DrainRequest(cluster="echo", endpoint_id="pod-b")
    await setup.admin.Drain(drain, metadata=AUTH)
    await setup.until_only("pod-a")
    await wait_for_state(setup, "pod-b", admin_pb2.ENDPOINT_STATE_DRAINED)
    undrain = admin_pb2.UndrainRequest(cluster="echo", endpoint_id="pod-b")
    await setup.admin.Undrain(undrain, metadata=AUTH)

    async def both() -> bool:
        return set(await setup.served_by(10)) == {"pod-a", "pod-b"}

    await _until(both, what="pod-b serving again")


async def test_it_holds_a_drain_until_the_last_stream_on_the_pod_ends(setup):
    slow = asyncio.ensure_future(setup.call(x_delay_ms="3000"))
    await wait_for(lambda: setup.a.in_flight + setup.b.in_flight == 1, what="the slow call")
    busy = "pod-a" if setup.a.in_flight else "pod-b"
    drain = admin_pb2.DrainRequest(cluster="echo", endpoint_id=busy)
    await setup.admin.Drain(drain, metadata=AUTH)
    assert await setup.state(busy) == admin_pb2.ENDPOINT_STATE_DRAINING
    assert await slow == busy  # the stream in flight finished on the draining pod
    await wait_for_state(setup, busy, admin_pb2.ENDPOINT_STATE_DRAINED)


async def test_it_ends_streams_left_at_the_drain_timeout(setup):
    slow = asyncio.ensure_future(setup.call(x_delay_ms="60000"))
    await wait_for(lambda: setup.a.in_flight + setup.b.in_flight == 1, what="the slow call")
    busy = "pod-a" if setup.a.in_flight else "pod-b"
    drain = admin_pb2.DrainRequest(cluster="echo", endpoint_id=busy, timeout_ms=500)
    await setup.admin.Drain(drain, metadata=AUTH)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(slow, 20)
    # HAProxy resets the stream: gRPC says UNKNOWN "Stream removed" (embedded: UNAVAILABLE).
    assert caught.value.code() is grpc.StatusCode.UNKNOWN
    await wait_for_state(setup, busy, admin_pb2.ENDPOINT_STATE_DRAINED)


async def test_it_changes_policy_without_failing_a_call(setup):
    errors: list[grpc.StatusCode] = []
    done = 0

    async def load() -> None:
        nonlocal done
        while True:
            try:
                await setup.call()
                done += 1
            except grpc.aio.AioRpcError as err:
                errors.append(err.code())

    task = asyncio.ensure_future(load())
    await wait_for(lambda: done >= 20, what="load running")
    request = admin_pb2.SetPolicyRequest(cluster="echo", policy="least_request")
    await setup.admin.SetPolicy(request, metadata=AUTH)
    pid = setup.balancer.engine.pid
    await wait_for(lambda: setup.balancer.engine.pid != pid, 20, what="a new haproxy")
    before = done
    await wait_for(lambda: done >= before + 50, 20, what="calls through the new process")
    task.cancel()
    assert errors == []
    # The old process leaves once its calls are done, and nothing takes its place: the
    # supervisor did not mistake the handover for a death and start a second HAProxy.
    await wait_for(lambda: len(_haproxy_processes()) == 1, 20, what="the old haproxy gone")
    assert setup.balancer.engine.restarts == 0
    assert [p.pid for p in _haproxy_processes()] == [setup.balancer.engine.pid]


async def test_an_idle_policy_change_leaves_one_haproxy(setup):
    """With no call in flight the old process leaves at once (`-sf`), before the new one
    answers on the runtime API: still a handover, not a death to restart after."""
    for policy in ("least_request", "random", "round_robin"):
        pid = setup.balancer.engine.pid
        request = admin_pb2.SetPolicyRequest(cluster="echo", policy=policy)
        await setup.admin.SetPolicy(request, metadata=AUTH)
        await wait_for(lambda old=pid: setup.balancer.engine.pid != old, 20, what="a new one")
        await wait_for(lambda: len(_haproxy_processes()) == 1, 20, what="the old one gone")
    await asyncio.sleep(1.0)  # a restart the supervisor started by mistake shows by now
    assert setup.balancer.engine.restarts == 0
    assert [p.pid for p in _haproxy_processes()] == [setup.balancer.engine.pid]
    assert set(await setup.served_by(20)) == {"pod-a", "pod-b"}


def _haproxy_processes() -> list[psutil.Process]:
    """This test's HAProxy processes (children of this process, through setpriv)."""
    children = psutil.Process().children(recursive=True)
    return [p for p in children if p.is_running() and p.name() == "haproxy"]


async def wait_for_state(setup: Setup, endpoint_id: str, state: int) -> None:
    async def reached() -> bool:
        return await setup.state(endpoint_id) == state

    await _until(reached, what=f"{endpoint_id} in {admin_pb2.EndpointState.Name(state)}")


async def test_it_takes_a_pod_out_while_its_health_check_fails(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    cluster = {"health_check": {"enabled": True, "interval_s": 0.2, "unhealthy_threshold": 1}}
    balancer = await balancers(config([a, b], cluster=cluster, **HAPROXY))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as proxy:
        setup = Setup(a, b, balancer, None, proxy)  # type: ignore[arg-type]

        async def both() -> bool:
            return set(await setup.served_by(10)) == {"pod-a", "pod-b"}

        await _until(both, what="both pods up after their first health checks")
        await b.set_serving(False)
        await setup.until_only("pod-a")
        await b.set_serving(True)
        await _until(both, what="pod-b back after its health check passes")


async def test_it_answers_unimplemented_for_a_method_without_a_route(backends, balancers):
    a = await backends("pod-a")
    data = config([a], **HAPROXY)
    two = replace(data, clusters=(*data.clusters, replace(data.clusters[0], name="other")))
    routed = replace(two, routes=(Route(cluster="other", service="other.Service"),))
    balancer = await balancers(routed)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as proxy:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await proxy.unary_unary(be.UNARY)(b"x", timeout=10)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "no route" in caught.value.details()
