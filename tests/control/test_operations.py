"""Restarts through the platform that lose no request: a real scene (pods as processes,
Ballast, clients through it), the control plane beside it, and the operations' steps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async

from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control.actions import Actor, Conflict, Unavailable
from dashboard.control.models import AuditEvent, EndpointOverride, Operation
from dashboard.control.operations import start_restart, start_rollout_restart
from demo.scene import SERVICE, Scene, SceneOptions
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ALICE = Actor("alice")
# Pods start in a second or two; a restart drains, restarts and waits for readiness.
SLOW_S = 60.0


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    service_history.cache_clear()
    started = Scene(SceneOptions(pods=2, clients_per_group=2, rate_per_client=20, seed=5))
    await started.start()
    control = ControlPlane(
        collector_config({"scene": started.balancer.admin_address or ""}, started.admin_token),
        platform=started.platform,
    )
    await control.start()
    try:
        await wait_for(lambda: len(_ready_pods()) == 2, SLOW_S, "both pods in a frame")
        yield started
    finally:
        await control.stop()
        await started.stop()
        service_history.cache_clear()


def _ready_pods() -> list[str]:
    newest = service_history().latest(SERVICE, 1)
    if not newest:
        return []
    return [p["pod"] for p in json.loads(newest[0])["pods"] if p["state"] == "READY"]


async def _wait_finished(operation_id: int) -> Operation:
    """Polls the operation's row until it is done or failed (wait_for takes no coroutine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SLOW_S
    while (op := await Operation.objects.aget(pk=operation_id)).running:
        if loop.time() > deadline:
            raise AssertionError(f"the operation did not finish: {op.step} {op.detail}")
        await asyncio.sleep(0.2)
    return op


async def test_a_restart_drains_replaces_the_pod_and_loses_no_call(scene: Scene) -> None:
    assert scene.via_ballast is not None
    old = _ready_pods()[0]
    scene.reset_load()

    operation = await sync_to_async(start_restart)(ALICE, SERVICE, old)
    with pytest.raises(Conflict, match=r"restart of .* is running"):
        await sync_to_async(start_restart)(ALICE, SERVICE, _ready_pods()[1])
    op = await _wait_finished(operation.pk)

    assert (op.step, op.detail) == ("done", ""), op.detail
    pods = {p.name: p for p in await scene.platform.list_pods(SERVICE)}
    assert old not in pods
    assert op.new_pod in pods and pods[op.new_pod].ready
    assert pods[op.new_pod].restart_count == 1  # the slot's first restart
    assert scene.balancer.clusters[SERVICE].endpoints[op.new_pod].state.value == "READY"
    assert not await EndpointOverride.objects.filter(endpoint_id=old).aexists()
    stats = scene.via_ballast.stats()
    assert stats.ok > 0 and stats.errors == 0, stats.codes
    actions = [e.action async for e in AuditEvent.objects.order_by("id")]
    assert actions == ["restart", "drain", "restart"]


async def test_a_rollout_restart_replaces_every_pod_one_at_a_time(scene: Scene) -> None:
    assert scene.via_ballast is not None
    old = set(_ready_pods())
    scene.reset_load()

    operation = await sync_to_async(start_rollout_restart)(ALICE, SERVICE)
    op = await _wait_finished(operation.pk)

    assert op.step == "done", op.detail
    new = {p.name for p in await scene.platform.list_pods(SERVICE) if p.ready}
    assert len(new) == 2 and not new & old
    stats = scene.via_ballast.stats()
    assert stats.ok > 0 and stats.errors == 0, stats.codes
    drains = [e.target async for e in AuditEvent.objects.filter(action="drain").order_by("id")]
    assert set(drains) == old  # each old pod was drained before it was restarted


async def test_without_a_platform_a_restart_is_refused_with_a_reason(scene: Scene) -> None:
    from dashboard.control import runtime

    saved = runtime.current()
    runtime.install_runtime(runtime.Runtime(saved.loop, saved.collector, None, saved.replicas))
    try:
        with pytest.raises(Unavailable, match="no platform is configured"):
            await sync_to_async(start_restart)(ALICE, SERVICE, _ready_pods()[0])
    finally:
        runtime.install_runtime(saved)
