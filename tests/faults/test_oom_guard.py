"""Act before the OOM killer, for real: leaky pods under a memory limit on the local
platform (which kills them over it), Ballast in front, clients through it; the OOM guard
restarts each pod before its limit, and not one call through Ballast fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async

from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control.api import observed
from dashboard.control.models import AuditEvent, Operation, ServiceAutomation
from dashboard.control.oomguard import ACTION, GuardConfig
from demo.scene import SERVICE, Scene
from tests.support.oom import leaky_scene, oom_kills
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SLOW_S = 120.0


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[Scene, ControlPlane]]:
    service_history.cache_clear()
    await ServiceAutomation.objects.acreate(service=SERVICE, oom_guard=True)
    scene = Scene(leaky_scene())
    await scene.start()
    control = ControlPlane(
        collector_config({"scene": scene.balancer.admin_address or ""}, scene.admin_token),
        platform=scene.platform,
    )
    control.oom_guard.config = GuardConfig(threshold_s=60, interval_s=1)
    await control.start()
    try:
        yield scene, control
    finally:
        await control.stop()
        await scene.stop()
        service_history.cache_clear()


def _predicted() -> dict[str, int]:
    newest = service_history().latest(SERVICE, 1)
    pods = json.loads(newest[0])["pods"] if newest else []
    return {p["pod"]: p["oom_s"] for p in pods if "oom_s" in p}


async def _first_guard_restart_done() -> Operation | None:
    event = await AuditEvent.objects.filter(action=ACTION, result="ok").order_by("id").afirst()
    if event is None:
        return None
    op = await Operation.objects.aget(pk=event.after["operation"])
    return None if op.running else op


async def test_it_restarts_a_leaky_pod_before_the_oom_killer_and_clients_see_no_error(
    guarded: tuple[Scene, ControlPlane],
) -> None:
    scene, _ = guarded
    assert scene.via_ballast is not None
    await wait_for(lambda: bool(_predicted()), SLOW_S, "a predicted time to OOM in a frame")
    api_pods = await sync_to_async(observed.pods)(SERVICE)
    assert any(isinstance(p["oom_s"], int) for p in api_pods)  # the REST API's pod facts

    loop = asyncio.get_running_loop()
    deadline = loop.time() + SLOW_S
    while (op := await _first_guard_restart_done()) is None:
        assert loop.time() < deadline, "the guard restarted no pod"
        await asyncio.sleep(0.5)

    assert op.step == "done", op.detail
    assert op.actor == "ballast"
    event = await AuditEvent.objects.filter(action=ACTION).order_by("id").afirst()
    assert event is not None and event.source == "system"
    assert f"{op.target}: working set " in event.detail
    assert event.detail.endswith("restarting before the OOM killer does")
    assert oom_kills(scene.platform.events()) == []
    stats = scene.via_ballast.stats()
    assert stats.ok > 0 and stats.errors == 0, stats.codes
