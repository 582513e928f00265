"""Restarts through the platform that lose no request: a real scene (pods as processes,
Ballast, clients through it), the control plane beside it, and the operations' steps;
and how a restart stops early (cancelled, or its dashboard process stopping) without
leaving its pod drained."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control import actions, runtime
from dashboard.control.actions import Actor, Conflict, Unavailable
from dashboard.control.models import AuditEvent, EndpointOverride, Operation
from dashboard.control.operations import (
    HEARTBEAT_S,
    request_cancel,
    start_restart,
    start_rollout_restart,
)
from demo.scene import SERVICE, Scene, SceneOptions
from tests.support.held_stream import held_stream
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ALICE = Actor("alice")
BOB = Actor("bob")
# Pods start in a second or two; a restart drains, restarts and waits for readiness.
SLOW_S = 60.0


@dataclass
class Running:
    scene: Scene
    control: ControlPlane

    def state(self, pod: str) -> str:
        """The pod's state on the scene's balancer."""
        return str(self.scene.balancer.clusters[SERVICE].endpoints[pod].state.value)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
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
        yield Running(started, control)
    finally:
        await control.stop()
        await started.stop()
        service_history.cache_clear()


@pytest.fixture
def scene(running: Running) -> Scene:
    return running.scene


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
    await sync_to_async(actions.set_weight)(ALICE, SERVICE, old, 300)
    scene.reset_load()

    operation = await sync_to_async(start_restart)(ALICE, SERVICE, old)
    with pytest.raises(Conflict, match=r"restart of .* is running"):
        await sync_to_async(start_restart)(ALICE, SERVICE, _ready_pods()[1])
    op = await _wait_finished(operation.pk)

    assert (op.step, op.detail) == ("done", ""), op.detail
    pods = {p.name: p for p in await scene.platform.list_pods(SERVICE)}
    assert old not in pods
    assert op.new_pod in pods and pods[op.new_pod].ready
    assert pods[op.new_pod].restart_count == 0  # a new pod, as after an eviction
    assert scene.balancer.clusters[SERVICE].endpoints[op.new_pod].state.value == "READY"
    assert not await EndpointOverride.objects.filter(endpoint_id=old).aexists()
    # The operator's weight on the old pod ended with it, said in the audit log.
    gone = await AuditEvent.objects.aget(action="pod_gone", target=old)
    assert gone.before == {"weight": 300, "drained": True} and "replaced by the restart" in (
        gone.detail
    )
    stats = scene.via_ballast.stats()
    assert stats.ok > 0 and stats.errors == 0, stats.codes
    audited = [e.action async for e in AuditEvent.objects.order_by("id")]
    assert audited == ["set_weight", "restart", "drain", "pod_gone", "restart"]


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


def _ballast_address(scene: Scene) -> str:
    return scene.balancer.listen_addresses[0]


async def _beats(operation_id: int) -> None:
    """Returns once the operation's heartbeat has moved on from its start."""
    first = (await Operation.objects.aget(pk=operation_id)).heartbeat_at
    assert first is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEARTBEAT_S * 10
    while (await Operation.objects.aget(pk=operation_id)).heartbeat_at == first:
        assert loop.time() < deadline, "the operation's heartbeat did not move"
        await asyncio.sleep(0.2)


async def test_it_cancels_a_restart_mid_drain_and_gives_the_pod_its_traffic_back(
    running: Running,
) -> None:
    scene = running.scene
    assert scene.via_ballast is not None
    async with held_stream(_ballast_address(scene)) as held:
        operation = await sync_to_async(start_restart)(ALICE, SERVICE, held.pod)
        await wait_for(lambda: running.state(held.pod) == "DRAINING", SLOW_S, "draining")
        assert operation.owner == runtime.current().owner
        await _beats(operation.pk)
        scene.reset_load()

        await sync_to_async(request_cancel)(BOB, operation.pk)
        op = await _wait_finished(operation.pk)

        assert (op.step, op.detail) == (
            "cancelled",
            f"cancelled by bob during step draining; pod {held.pod} undrained",
        )
        assert running.state(held.pod) == "READY"
        assert held.call.done() is False  # the call in flight was never cut
    assert not await EndpointOverride.objects.filter(endpoint_id=held.pod).aexists()
    ends = [(e.action, e.actor, e.result) async for e in AuditEvent.objects.order_by("id")]
    assert ends == [
        ("restart", "alice", "pending"),
        ("drain", "alice", "ok"),
        ("cancel", "bob", "ok"),
        ("undrain", "bob", "ok"),
        ("restart", "bob", "failed"),
    ]
    stats = scene.via_ballast.stats()
    assert stats.ok > 0 and stats.errors == 0, stats.codes
    again = await sync_to_async(start_restart)(ALICE, SERVICE, held.pod)
    assert (await _wait_finished(again.pk)).step == "done"


async def test_it_stops_its_restarts_when_the_dashboard_stops_and_says_so(
    running: Running,
) -> None:
    async with held_stream(_ballast_address(running.scene)) as held:
        operation = await sync_to_async(start_restart)(ALICE, SERVICE, held.pod)
        await wait_for(lambda: running.state(held.pod) == "DRAINING", SLOW_S, "draining")

        await running.control.stop()

        assert running.state(held.pod) == "READY"
    op = await Operation.objects.aget(pk=operation.pk)
    assert (op.step, op.detail) == (
        "failed",
        f"the dashboard process running it stopped during step draining; pod {held.pod} undrained",
    )
    end = await AuditEvent.objects.filter(action="restart").alatest("id")
    assert (end.actor, end.source, end.result) == ("ballast", "system", "failed")


@sync_to_async
def _orphan(pod: str) -> int:
    """A restart a dead dashboard process left in draining, its pod drained."""
    actions.drain(ALICE, SERVICE, pod, timeout_s=30)
    op = Operation.objects.create(
        kind=Operation.Kind.RESTART, service=SERVICE, target=pod, actor="alice",
        owner=f"{socket.gethostname()}:999999999:dead", heartbeat_at=timezone.now(),
    )  # fmt: skip
    Operation.objects.filter(pk=op.pk).update(heartbeat_at=op.heartbeat_at - timedelta(hours=1))
    return int(op.pk)


async def test_after_an_orphan_is_recovered_its_service_restarts_again(
    running: Running,
) -> None:
    pod = _ready_pods()[0]
    orphan = await _orphan(pod)
    await wait_for(lambda: running.state(pod) == "DRAINED", SLOW_S, "drained")

    op = await _wait_finished(orphan)
    again = await sync_to_async(start_restart)(ALICE, SERVICE, pod)

    assert op.step == "failed" and op.detail.endswith(f"during step draining; pod {pod} undrained")
    assert (await _wait_finished(again.pk)).step == "done"


async def test_a_restart_finishes_an_orphan_of_its_service_first_instead_of_409(
    running: Running,
) -> None:
    sweeper = running.control.sweeper
    assert sweeper is not None
    await sweeper.stop()  # the restart itself, not the sweeper, must clear the way
    pod = _ready_pods()[0]
    orphan = await _orphan(pod)

    again = await sync_to_async(start_restart)(ALICE, SERVICE, pod)

    op = await Operation.objects.aget(pk=orphan)
    assert op.step == "failed" and op.detail.startswith("orphaned: ")
    assert (await _wait_finished(again.pk)).step == "done"


@sync_to_async
def _cancel_from_another_process(operation_id: int) -> None:
    """What another dashboard process's API does for a cancel: the flag and the audit."""
    op = Operation.objects.get(pk=operation_id)
    Operation.objects.filter(pk=operation_id).update(cancel_requested=True)
    AuditEvent.objects.create(
        actor="carol", source=AuditEvent.Source.API, token="abcd1234", action="cancel",
        service=op.service, target=op.target, after={"operation": op.pk},
        result=AuditEvent.Result.OK,
    )  # fmt: skip


async def test_the_owner_notices_a_cancel_asked_through_another_process(
    running: Running,
) -> None:
    async with held_stream(_ballast_address(running.scene)) as held:
        operation = await sync_to_async(start_restart)(ALICE, SERVICE, held.pod)
        await wait_for(lambda: running.state(held.pod) == "DRAINING", SLOW_S, "draining")

        await _cancel_from_another_process(operation.pk)
        op = await _wait_finished(operation.pk)

        assert (op.step, op.detail) == (
            "cancelled",
            f"cancelled by carol during step draining; pod {held.pod} undrained",
        )
        assert running.state(held.pod) == "READY"
    end = await AuditEvent.objects.filter(action="restart").alatest("id")
    assert (end.actor, end.source, end.token) == ("carol", "api", "abcd1234")
