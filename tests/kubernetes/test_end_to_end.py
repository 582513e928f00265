"""End to end: `python -m balancer` with Kubernetes discovery in front of real demo pods.

The fake API server serves the pods' addresses as EndpointSlices; under steady
load it marks one pod terminating (as the API does when a pod is deleted), the
pod then gets SIGTERM and leaves the slices, and a replacement pod comes up in a
slice of its own. Clients must not see a single error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kubernetes.fakeapi import FakeKubernetes, endpoint
from tests.support.desired_state import BalancerProcess
from tests.support.pods_killed import Traffic, WorkloadPod, start_pod, stop_pods
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

TOML = """\
[balancer]
id = "k8s-e2e"
shutdown_grace_s = 1

[[listeners]]
address = "127.0.0.1:0"

[[clusters]]
name = "inventory"
discover_unary_methods = false
discovery = { kind = "kubernetes", service = "inventory", namespace = "shop", port = "grpc" }
"""


def serve(fake: FakeKubernetes, pod: WorkloadPod, **conditions: bool) -> None:
    """The pod's EndpointSlice: one per pod, as the pods share 127.0.0.1 on their own ports."""
    host, _, port = pod.address.rpartition(":")
    fake.put_slice(
        f"inventory-{pod.name}", "inventory", [endpoint(host, pod.name, **conditions)],
        ports=[{"name": "grpc", "port": int(port), "protocol": "TCP"}], namespace="shop",
    )  # fmt: skip


@pytest.fixture
async def pods() -> AsyncIterator[list[WorkloadPod]]:
    started: list[WorkloadPod] = []
    yield started
    await stop_pods(started)


async def test_a_pod_replaced_under_load_costs_clients_nothing(
    fake_api: FakeKubernetes, kubeconfig: Path, tmp_path: Path, pods: list[WorkloadPod]
) -> None:
    pods.extend(await asyncio.gather(start_pod("inventory-0"), start_pod("inventory-1")))
    for pod in pods:
        serve(fake_api, pod)
    balancer = BalancerProcess(tmp_path, TOML, env={"KUBECONFIG": str(kubeconfig)}).start()
    try:
        ready = await balancer.wait_ready()
        traffic = Traffic(ready["listeners"][0], clients=8)
        traffic.start()
        await wait_for(lambda: traffic.ok() >= 200, 30, "steady traffic")

        # Deleting inventory-0: the API marks its endpoint terminating (still serving).
        serve(fake_api, pods[0], ready=False, serving=True, terminating=True)
        await wait_for(lambda: "inventory-0 READY → DRAINING" in balancer.stderr()
                       or "inventory-0 READY → DRAINED" in balancer.stderr(),
                       30, "the balancer draining inventory-0")  # fmt: skip
        # Its replacement starts and becomes ready in a slice of its own.
        pods.append(await start_pod("inventory-2"))
        serve(fake_api, pods[2], ready=False)
        serve(fake_api, pods[2])
        # The kubelet stops the old pod (after its preStop grace), and it leaves the slices.
        await stop_pods([pods[0]])
        fake_api.delete_slice("inventory-inventory-0", namespace="shop")
        await wait_for(lambda: "endpoint inventory-0 removed" in balancer.stderr(), 30, "removal")
        await wait_for(lambda: "inventory-2 PENDING → READY" in balancer.stderr()
                       or "inventory-2 UNHEALTHY → READY" in balancer.stderr(),
                       30, "inventory-2 READY")  # fmt: skip
        after = asyncio.get_running_loop().time()
        await wait_for(lambda: traffic.ok(started_after_s=after) >= 200, 30, "traffic after")
        await traffic.stop()
    finally:
        balancer.stop()

    assert traffic.errors() == {}, traffic.errors()
    assert traffic.ok() >= 400
    print(f"calls ok: {traffic.ok()}, errors: {sum(traffic.errors().values())}")
