"""The reconciler against real balancers: desired state in the database reaches every
replica, comes back after a replica restarts, and is reverted when it expires."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from balancer.server import Balancer
from dashboard.collector.history import FrameHistory
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from dashboard.control.models import AuditEvent, ClusterOverride, EndpointOverride
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
    event = await AuditEvent.objects.aget(action="expire")
    assert (event.actor, event.source, event.target, event.result) == (
        "ballast", "system", "pod-a", "ok",
    )  # fmt: skip
    assert event.before == {"weight": 400, "drained": False}
