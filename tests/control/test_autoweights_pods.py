"""Auto weights on real pods: demo-workload processes on the local platform behind a real
balancer (round robin), the control plane with the auto-weights controller, clients calling
through the balancer. A pod whose calls cost twice the CPU ends up with a lower weight,
the balancer holds it, and it gets fewer of the calls; turned off, the default is back."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.control import automation
from dashboard.control.actions import Actor
from dashboard.control.autoweights import AutoWeightsConfig
from dashboard.control.models import AuditEvent, AutoWeight
from demo.loadgen import LoadGenerator
from demo.scene import SERVICE, Scene, SceneOptions, client_group
from demo.v1 import workload_pb2 as pb
from demo.workload.knobs import set_knobs
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

CPU_MS = 3.0


async def set_cpu_ms(address: str, cpu_ms: float) -> None:
    await set_knobs(address, pb.KnobSettings(cpu_ms=cpu_ms))


@pytest.fixture
async def scene(fresh_history: None) -> AsyncIterator[tuple[Scene, ControlPlane, LoadGenerator]]:
    """Three pods (the first at twice the CPU per call), the balancer, the control plane
    (blackout 4 s, a 6 s window, to keep the test short) and clients through Ballast."""
    options = SceneOptions(
        seed=3, pods=3, clients_per_group=0, policy="round_robin",
        knobs={"BALLAST_KNOB_CPU_MS": f"{CPU_MS:g}"},
    )  # fmt: skip
    running = Scene(options)
    await running.start()
    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=500):
        replicas = {running.balancer.config.id: running.balancer.admin_address or ""}
        plane = ControlPlane(
            collector_config(replicas, running.admin_token), platform=running.platform
        )
        plane.autoweigher.config = AutoWeightsConfig(blackout_s=4.0)
        plane.autoweigher.window_s = 6.0
        await plane.start()
        clients = client_group("ballast", running.balancer.listen_addresses[0],
                               SceneOptions(clients_per_group=6, rate_per_client=6.0))  # fmt: skip
        load = LoadGenerator(clients, rng=random.Random(1))
        try:
            await load.start()
            yield running, plane, load
        finally:
            await load.stop(grace_s=0)
            await plane.stop()
            await running.stop()


def weights(scene: Scene) -> dict[str, int]:
    return {name: int(ep.weight) for name, ep in scene.balancer.clusters[SERVICE].endpoints.items()}


def slow_is_lighter(scene: Scene, slow: str) -> bool:
    w = weights(scene)
    others = [v for k, v in w.items() if k != slow]
    return bool(others) and all(w[slow] < 0.85 * v for v in others)


@sync_to_async
def rows() -> dict[str, Any]:
    return {w.endpoint_id: (w.weight, w.reason) for w in AutoWeight.objects.all()}


async def test_a_pod_costing_twice_the_cpu_gets_a_lower_weight_the_balancer_holds(
    scene: tuple[Scene, ControlPlane, LoadGenerator],
) -> None:
    running, _, load = scene
    pods = {p.name: p.address for p in await running.platform.list_pods(SERVICE)}
    slow = sorted(pods)[0]
    await set_cpu_ms(pods[slow] or "", 2 * CPU_MS)
    await sync_to_async(automation.set_switches)(Actor("operator"), SERVICE, {"autoweights": True})

    await wait_for(lambda: slow_is_lighter(running, slow), timeout_s=120,
                   what=f"{slow}'s weight below the others' on the balancer")  # fmt: skip
    given = await rows()
    assert given[slow][0] == weights(running)[slow]
    assert given[slow][1].startswith(f"pod {slow}: ") and " cores at " in given[slow][1]
    audited = await sync_to_async(list)(
        AuditEvent.objects.filter(action=automation.AUTO_WEIGHT, target=slow)
    )
    assert audited and all(a.actor == "ballast" and a.source == "system" for a in audited)

    # Held: the balancer sends the slow pod fewer of the calls from now on.
    load.reset()
    await wait_for(lambda: sum(load.stats().pods.values()) >= 300, timeout_s=60, what="calls")
    calls = load.stats().pods
    assert all(calls[slow] < calls[p] for p in pods if p != slow), calls
    assert set(load.stats().codes) == {"OK"}

    await sync_to_async(automation.set_switches)(Actor("operator"), SERVICE, {"autoweights": False})
    await wait_for(lambda: set(weights(running).values()) == {100}, timeout_s=30,
                   what="every pod back at the default weight")  # fmt: skip
