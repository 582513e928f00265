"""The reconciler against real balancers: desired state in the database reaches every
replica, comes back after a replica restarts, is reverted when it expires; whatever a
replica holds that is not desired (a missed undrain or clear) is corrected, and
"converged" means equal."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from balancer.server import Balancer
from dashboard.collector.history import FrameHistory
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from dashboard.control.models import AuditEvent, ClusterOverride, EndpointOverride, Operation
from dashboard.control.reconciler import Reconciler
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SERVICE = "inventory"


async def _discard(frame: object) -> None:
    """The frames go nowhere: these tests look at the balancers."""


@pytest.fixture
async def pods(backends: Callable[..., Awaitable[Backend]]) -> list[Backend]:
    return [await backends("pod-a"), await backends("pod-b")]


@pytest.fixture
async def control(
    pods: list[Backend], balancers: Callable[..., Awaitable[Balancer]]
) -> AsyncIterator[tuple[Balancer, Collector, Reconciler]]:
    """A balancer, a collector watching it and a reconciler passing every 100 ms."""
    balancer = await balancers(config(pods, admin={}, cluster={"name": SERVICE}))
    cfg = CollectorConfig(
        replicas=[ReplicaTarget("b0", balancer.admin_address or "", ADMIN_TOKEN)],
        services={SERVICE: ServiceTarget(SERVICE, SERVICE)},
        interval_s=0.25,
        backoff_s=(0.05, 0.1, 0.2),
    )
    collector = Collector(cfg, _discard, rng=random.Random(1), history=FrameHistory(10))
    reconciler = Reconciler(collector, cfg.replicas, interval_s=0.1)
    await collector.start()
    await reconciler.start()
    try:
        yield balancer, collector, reconciler
    finally:
        await reconciler.stop()
        await collector.stop()


def converged(collector: Collector) -> bool | None:
    return collector.replica_frames()[0].get("converged")


async def test_desired_state_reaches_the_replica_and_it_shows_as_converged(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    balancer, collector, _ = control
    await wait_for(lambda: converged(collector) is True, what="converged with nothing desired")

    await EndpointOverride.objects.acreate(service=SERVICE, endpoint_id="pod-a", weight=300)
    await EndpointOverride.objects.acreate(
        service=SERVICE, endpoint_id="pod-b", drained=True, drain_timeout_s=5.0
    )
    await ClusterOverride.objects.acreate(service=SERVICE, policy="round_robin")

    cluster = balancer.clusters[SERVICE]
    await wait_for(
        lambda: (
            cluster.endpoints["pod-a"].weight == 300
            and cluster.endpoints["pod-b"].state.value in ("DRAINING", "DRAINED")
            and cluster.policy == "round_robin"
        ),
        what="the desired state on the balancer",
    )
    await wait_for(lambda: converged(collector) is True, what="the replica judged converged")


async def test_a_restarted_replica_gets_the_desired_state_again(
    pods: list[Backend],
    balancers: Callable[..., Awaitable[Balancer]],
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    balancer, collector, _ = control
    await EndpointOverride.objects.acreate(service=SERVICE, endpoint_id="pod-a", weight=250)
    await wait_for(lambda: balancer.clusters[SERVICE].endpoints["pod-a"].weight == 250)

    admin_address = balancer.admin_address
    await balancer.stop(grace_s=0.1)
    await wait_for(lambda: collector.replica_frames()[0]["up"] is False, what="replica down")
    # The same replica comes back (same admin address), knowing nothing of the override.
    again = await balancers(
        config(pods, admin={"address": admin_address}, cluster={"name": SERVICE})
    )
    assert again.clusters[SERVICE].endpoints["pod-a"].weight == 100
    await wait_for(
        lambda: again.clusters[SERVICE].endpoints["pod-a"].weight == 250,
        what="the weight re-applied to the restarted replica",
    )
    await wait_for(lambda: converged(collector) is True, what="converged again")


async def test_an_expired_override_is_reverted_and_audited(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    balancer, _, _ = control
    endpoint = balancer.clusters[SERVICE].endpoints["pod-a"]
    expires = timezone.now() + timedelta(seconds=1)
    await EndpointOverride.objects.acreate(
        service=SERVICE, endpoint_id="pod-a", weight=400, base_weight=100, expires_at=expires
    )
    await wait_for(lambda: endpoint.weight == 400, what="the override applied")

    await wait_for(lambda: endpoint.weight == 100, what="the weight reverted at expiry")
    assert not await EndpointOverride.objects.filter(endpoint_id="pod-a").aexists()

    async def expiry() -> AuditEvent:
        return await AuditEvent.objects.aget(action="expire")

    event = await expiry()
    assert (event.actor, event.source, event.target) == ("ballast", "system", "pod-a")
    assert event.before == {"weight": 400, "drained": False}
    await wait_until(lambda: _result(expiry), what="the expiry applied on b0")
    event = await expiry()
    assert event.pending_replicas == []
    assert "applied on b0 at " in event.detail


async def _result(get: Callable[[], Awaitable[AuditEvent]]) -> bool:
    return (await get()).result == "ok"


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = ""
) -> None:
    """`wait_for` for a predicate that reads the database."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_it_undrains_a_pod_the_replica_holds_drained_without_a_drain_desired(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    """What a replica paused across an undrain or a clear holds when it is back."""
    balancer, collector, _ = control
    await wait_for(lambda: converged(collector) is True, what="converged with nothing desired")
    cluster = balancer.clusters[SERVICE]
    cluster.drain("pod-a")
    cluster.set_weight("pod-b", 700)
    cluster.set_policy("random")

    await wait_for(
        lambda: (
            cluster.endpoints["pod-a"].state.value == "READY"
            and cluster.endpoints["pod-b"].weight == 100
            and cluster.policy == "round_robin"
        ),
        what="the pod undrained, the weight and the policy back to the configured ones",
    )
    await wait_for(lambda: converged(collector) is True, what="converged again")


async def test_it_never_says_converged_from_a_picture_too_old_to_tell(
    pods: list[Backend], balancers: Callable[..., Awaitable[Balancer]]
) -> None:
    """A paused replica's last snapshot, before the collector gives up on it."""
    balancer = await balancers(config(pods, admin={}, cluster={"name": SERVICE}))
    cfg = CollectorConfig(
        replicas=[ReplicaTarget("b0", balancer.admin_address or "", ADMIN_TOKEN)],
        services={SERVICE: ServiceTarget(SERVICE, SERVICE)},
        interval_s=0.25,
    )
    collector = Collector(cfg, _discard, history=FrameHistory(10))
    # Its clock runs 30 s ahead: every snapshot looks 30 s old.
    reconciler = Reconciler(collector, cfg.replicas, clock=lambda: time.time() + 30)
    await collector.start()
    try:
        await wait_for(lambda: collector.snapshots()["b0"] is not None, what="a snapshot")
        await reconciler.reconcile_once()
        assert converged(collector) is None
        await Reconciler(collector, cfg.replicas).reconcile_once()
        assert converged(collector) is True
    finally:
        await collector.stop()


async def test_a_change_not_yet_seen_on_the_replica_is_not_converged(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    """Drained and undrained again: the replica's picture is the same as before, but
    until a snapshot taken after the change shows it, nobody knows."""
    _, collector, reconciler = control
    await reconciler.stop()
    await wait_for(lambda: collector.snapshots()["b0"] is not None, what="a snapshot")
    await reconciler.reconcile_once()
    assert converged(collector) is True
    await AuditEvent.objects.acreate(
        actor="someone", source="api", action="undrain", service=SERVICE, target="pod-a",
        result="ok",
    )  # fmt: skip
    await reconciler.reconcile_once()
    assert converged(collector) is False
    newest = collector.snapshots()["b0"]
    await wait_for(lambda: collector.snapshots()["b0"] is not newest, what="a newer snapshot")
    await reconciler.reconcile_once()
    assert converged(collector) is True


async def test_pending_audit_events_say_when_they_were_applied(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    _, collector, running = control
    await running.stop()
    # b1 is configured but down; b9 was, and is no more.
    down = ReplicaTarget("b1", "127.0.0.1:1", ADMIN_TOKEN)
    reconciler = Reconciler(collector, [*running.targets, down])
    pending = await AuditEvent.objects.acreate(
        actor="operator", source="api", action="drain", service=SERVICE, target="pod-a",
        result="pending", detail="b0: replica is down; b1: replica is down",
        pending_replicas=["b0", "b1"],
    )  # fmt: skip
    gone = await AuditEvent.objects.acreate(
        actor="operator", source="api", action="undrain", service=SERVICE, target="pod-a",
        result="pending", detail="b9: replica is down", pending_replicas=["b9"],
    )  # fmt: skip
    started = await AuditEvent.objects.acreate(
        actor="operator", source="api", action="restart", service=SERVICE, target="pod-a",
        result="pending", detail="started",
    )  # fmt: skip

    async def settled() -> bool:
        await reconciler.reconcile_once()
        return (await AuditEvent.objects.aget(pk=pending.pk)).pending_replicas == ["b1"]

    await wait_until(settled, what="b0 taken off the pending event")
    event = await AuditEvent.objects.aget(pk=pending.pk)
    assert event.result == "pending"  # b1 is still down
    assert event.detail.startswith("b0: replica is down; b1: replica is down; applied on b0 at ")
    assert event.detail.endswith(" UTC")
    event = await AuditEvent.objects.aget(pk=gone.pk)
    assert (event.result, event.pending_replicas) == ("ok", [])
    assert event.detail == "b9: replica is down; b9 is no longer configured"
    assert (await AuditEvent.objects.aget(pk=started.pk)).detail == "started"


async def test_a_pod_a_running_restart_drained_is_not_undrained(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    """Its drain override is dropped before discovery removes the old pod."""
    balancer, _, reconciler = control
    operation = await Operation.objects.acreate(
        kind="restart", service=SERVICE, target="pod-a", step="restarting", actor="operator"
    )
    endpoint = balancer.clusters[SERVICE].endpoints["pod-a"]
    balancer.clusters[SERVICE].drain("pod-a")
    for _ in range(3):
        await reconciler.reconcile_once()
    assert endpoint.state.value == "DRAINED"

    operation.step = "done"
    await operation.asave()
    await wait_for(lambda: endpoint.state.value == "READY", what="undrained once it is done")


async def test_an_act_noted_while_a_pass_is_held_up_is_not_converged_until_seen(
    control: tuple[Balancer, Collector, Reconciler],
) -> None:
    """An act tells the reconciler at once: its passes may wait on the database thread
    behind an act that waits on a paused replica."""
    _, collector, reconciler = control
    await reconciler.stop()
    await wait_for(lambda: collector.snapshots()["b0"] is not None, what="a snapshot")
    await reconciler.reconcile_once()
    assert converged(collector) is True
    seen = collector.snapshots()["b0"]
    reconciler.note_change()
    assert converged(collector) is False
    await wait_for(lambda: collector.snapshots()["b0"] is not seen, what="a newer snapshot")
    await reconciler.reconcile_once()
    assert converged(collector) is True
