"""Pods come and go with new names on the local platform too: an override on a pod that
is gone (scaled away: off the platform's pods and every balancer) ends, audited by the
system as "pod gone", while the pods that remain keep theirs and the replica converges."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async

from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control import actions
from dashboard.control.actions import Actor
from dashboard.control.models import AuditEvent, EndpointOverride
from demo.scene import SERVICE, Scene, SceneOptions
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

ALICE = Actor("alice")
SLOW_S = 60.0


def _pods_in_frame() -> list[str]:
    newest = service_history().latest(SERVICE, 1)
    if not newest:
        return []
    return [p["pod"] for p in json.loads(newest[0])["pods"] if p["state"] == "READY"]


def _converged() -> bool:
    newest = service_history().latest(SERVICE, 1)
    replicas = json.loads(newest[0])["replicas"] if newest else []
    return bool(replicas) and all(r["up"] and r["converged"] is True for r in replicas)


@pytest.fixture
async def plane() -> AsyncIterator[tuple[Scene, ControlPlane]]:
    service_history.cache_clear()
    scene = Scene(SceneOptions(pods=2, clients_per_group=1, rate_per_client=10, seed=3))
    await scene.start()
    control = ControlPlane(
        collector_config({"scene": scene.balancer.admin_address or ""}, scene.admin_token),
        platform=scene.platform,
    )
    control.reconciler.pod_gone_grace_s = 1.0
    await control.start()
    try:
        await wait_for(lambda: len(_pods_in_frame()) == 2, SLOW_S, "both pods in a frame")
        yield scene, control
    finally:
        await control.stop()
        await scene.stop()
        service_history.cache_clear()


async def test_it_ends_the_override_of_a_pod_scaled_away(
    plane: tuple[Scene, ControlPlane],
) -> None:
    scene, _ = plane
    pods = sorted(_pods_in_frame())
    for name in pods:
        await sync_to_async(actions.set_weight)(ALICE, SERVICE, name, 200)

    await scene.platform.scale(SERVICE, 1)
    kept = {p.name for p in await scene.platform.list_pods(SERVICE)}
    (gone,) = set(pods) - kept

    async def ended() -> bool:
        return not await EndpointOverride.objects.filter(endpoint_id=gone).aexists()

    await wait_for_async(ended, SLOW_S, "the override of the scaled-away pod to end")
    event = await AuditEvent.objects.filter(action="pod_gone").aget()
    assert (event.source, event.actor, event.target, event.result) == (
        "system", "ballast", gone, "ok",
    )  # fmt: skip
    assert event.detail.startswith("pod gone")
    (still,) = kept
    assert await EndpointOverride.objects.filter(endpoint_id=still, weight=200).aexists()
    await wait_for(_converged, SLOW_S, "the replica converged")


async def wait_for_async(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Polls an async `check` until it is true; fails after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
