"""An endpoint's channel connectivity, as a gRPC client sees it, decides whether it is
picked: real backends and pod processes behind a real balancer, read over the admin API."""

from __future__ import annotations

import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import config_from_dict
from balancer.discovery import Remove
from balancer.endpoint import State
from balancer.server import Balancer
from platforms.local import processes
from tests.support import backend as be
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.waiting import wait_for

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
POD = str(Path(__file__).resolve().parent / "support" / "pod.py")
SLOW_S = 60.0


async def snapshot_of(balancer: Balancer) -> admin_pb2.ClusterSnapshot:
    assert balancer.admin_address is not None
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        snapshot = await stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
    (cluster,) = snapshot.clusters
    return cluster


def endpoint_of(cluster: admin_pb2.ClusterSnapshot, name: str) -> admin_pb2.EndpointSnapshot:
    return next(ep for ep in cluster.endpoints if ep.endpoint_id == name)


async def served_by(balancer: Balancer, n: int) -> Counter[str]:
    served: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        for _ in range(n):
            call = channel.unary_unary(be.UNARY)(b"ping", timeout=5)
            await call
            served[str(dict(await call.initial_metadata())["x-backend"])] += 1
    return served


async def test_it_takes_a_stopped_backend_out_at_once_and_says_why(backends, balancers):
    a, b = await backends("a"), await backends("b")
    balancer = await balancers(config([a, b], admin={}))
    cluster = balancer.clusters["echo"]
    await wait_for(lambda: all(ep.connectivity == "READY" for ep in cluster.endpoints.values()))
    await b.stop()
    await wait_for(lambda: cluster.endpoints["b"].state is State.UNHEALTHY, SLOW_S)
    assert await served_by(balancer, 20) == {"a": 20}
    snapshot = await snapshot_of(balancer)
    ep = endpoint_of(snapshot, "b")
    assert ep.state == admin_pb2.ENDPOINT_STATE_UNHEALTHY
    assert ep.state_reason.startswith("cannot connect: channel in TRANSIENT_FAILURE")
    assert ep.connectivity == "TRANSIENT_FAILURE"
    assert endpoint_of(snapshot, "a").connectivity == "READY"
    assert not snapshot.panic  # 1 of 2 READY is not below 50 %


async def test_it_says_so_in_the_snapshot_when_it_panics(backends, balancers):
    a, b = await backends("a"), await backends("b")
    balancer = await balancers(config([a, b], admin={}, cluster={"panic_threshold_percent": 60}))
    cluster = balancer.clusters["echo"]
    await b.stop()
    await wait_for(lambda: cluster.endpoints["b"].state is State.UNHEALTHY, SLOW_S)
    assert (await snapshot_of(balancer)).panic
    # In panic, an endpoint that cannot connect still gets nothing.
    assert await served_by(balancer, 10) == {"a": 10}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def pod_on_a_fixed_port() -> AsyncIterator[tuple[int, list[processes.Process]]]:
    port, started = free_port(), []
    yield port, started
    for process in started:
        await processes.terminate(process, grace_s=2.0)


@pytest.mark.parametrize("health_checks", [False, True])
async def test_it_puts_a_killed_pod_back_when_it_serves_again(pod_on_a_fixed_port, health_checks):
    port, started = pod_on_a_fixed_port
    argv = [sys.executable, POD, "--port", str(port)]
    started.append(await processes.spawn(argv))
    data = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "clusters": [{"name": "pods", "discovery": {"endpoints": [f"127.0.0.1:{port}"]},
                      "health_check": {"enabled": health_checks, "interval_s": 0.2}}],
    }  # fmt: skip
    balancer = Balancer(config_from_dict(data, environ={}))
    await balancer.start()
    try:
        ep = balancer.clusters["pods"].endpoints[f"127.0.0.1:{port}"]
        await wait_for(lambda: ep.state is State.READY, SLOW_S, "the pod READY")
        processes.kill_group(started[0])
        await wait_for(lambda: ep.state is State.UNHEALTHY, SLOW_S, "the killed pod out")
        started.append(await processes.spawn(argv))
        # gRPC's reconnect backoff (1 s, ×1.6) decides how soon: seconds, not minutes.
        await wait_for(lambda: ep.state is State.READY, SLOW_S, "the pod back")
        assert ep.connectivity == "READY"
    finally:
        await balancer.stop(grace_s=0)


async def test_it_stops_watching_a_channel_when_its_endpoint_goes(backends, balancers):
    a, b = await backends("a"), await backends("b")
    balancer = await balancers(config([a, b]))
    cluster = balancer.clusters["echo"]
    task = cluster.endpoints["b"].connectivity_task
    assert task is not None and not task.done()
    cluster.apply(Remove(("b",)))
    await wait_for(task.done, 10, "the watch task ended")
    assert task.cancelled()
