"""The demo's third client group: proxyless clients (xds:///inventory, a subprocess with a
bootstrap file) reach every pod straight, and the balancer's admin snapshot counts their
calls per pod from their load reports, as the dashboard shows them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc.aio
import psutil
import pytest

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from demo.scene import Scene, SceneOptions
from tests.support.waiting import wait_for


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    options = SceneOptions(pods=3, clients_per_group=2, rate_per_client=25, seed=5, proxyless=True)
    started = Scene(options)
    await started.start()
    yield started
    await started.stop()


async def proxyless_calls_per_pod(scene: Scene) -> dict[str, int]:
    """What the balancer's admin API says proxyless clients sent each pod (LRS)."""
    assert scene.balancer.admin_address is not None
    auth = (("authorization", f"Bearer {scene.admin_token}"),)
    async with grpc.aio.insecure_channel(scene.balancer.admin_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        snapshot = await stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=auth)
    (cluster,) = snapshot.clusters
    return {ep.endpoint_id: ep.proxyless_requests_issued for ep in cluster.endpoints}


async def test_it_runs_proxyless_clients_that_reach_every_pod_straight(scene: Scene) -> None:
    assert scene.proxyless is not None and scene.bootstrap_path is not None
    bootstrap = json.loads(scene.bootstrap_path.read_text())
    assert bootstrap["xds_servers"][0]["server_uri"] == scene.balancer.xds_address
    pods = {p.name for p in await scene.platform.list_pods("inventory")}
    proxyless = scene.proxyless

    def every_pod_called() -> bool:
        stats = proxyless.stats()
        return set(stats.pods) == pods and all(n >= 20 for n in stats.pods.values())

    await wait_for(every_pod_called, timeout_s=60, what="proxyless calls on every pod")
    # The balancer is not in their path, but their load reports reach it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    reported = await proxyless_calls_per_pod(scene)
    while not (set(reported) == pods and all(n > 0 for n in reported.values())):
        assert loop.time() < deadline, f"no load reports for every pod: {reported}"
        await asyncio.sleep(0.5)
        reported = await proxyless_calls_per_pod(scene)
    pid = proxyless.pid
    assert pid is not None and psutil.pid_exists(pid)

    await scene.stop()
    final = proxyless.stats()
    assert final.codes.get("OK", 0) > 0
    assert set(final.codes) == {"OK"}, final.codes
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert scene.bootstrap_path is None  # the bootstrap file went with the scene
