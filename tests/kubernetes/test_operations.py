"""The control plane's restart on the Kubernetes platform, as the fake API receives it:
drain, evict (never delete), the replacement READY; a PodDisruptionBudget's refusal
ends the operation failed with the API's reason, audited, and the pod undrained."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from balancer.config import config_from_dict
from balancer.endpoint import State
from balancer.server import Balancer
from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control.actions import Actor
from dashboard.control.models import AuditEvent, Operation
from dashboard.control.operations import start_restart
from platforms.discovery import kubernetes_discovery
from platforms.kubernetes import KubernetesPlatform, KubernetesSettings
from tests.kubernetes.fakeapi import FakeKubernetes, endpoint
from tests.kubernetes.workloads import deployment, pod
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

SERVICE = "inventory"
ALICE = Actor("alice")


@dataclass
class Shop:
    fake: FakeKubernetes
    balancer: Balancer
    pods: dict[str, Backend]

    def serve(self, name: str) -> None:
        second = "abc".index(name[-1])  # a, b, c: oldest first
        self.fake.put_pod(pod(name, ip="127.0.0.1", created=f"2026-01-01T00:00:0{second}Z"))
        self.fake.put_slice(
            f"{SERVICE}-{name}", SERVICE, [endpoint("127.0.0.1", name)],
            ports=[{"name": "grpc", "port": self.pods[name].port}], namespace="shop",
        )  # fmt: skip

    def state(self, name: str) -> State | None:
        ep = self.balancer.clusters[SERVICE].endpoints.get(name)
        return ep.state if ep is not None else None


@pytest.fixture(autouse=True)
def _fresh(fresh_dashboard_state: None) -> None:
    """Each test starts with a fresh channel layer and page history."""


def _frame_ready() -> set[str]:
    newest = service_history().latest(SERVICE, 1)
    if not newest:
        return set()
    return {p["pod"] for p in json.loads(newest[0])["pods"] if p["state"] == "READY"}


@pytest.fixture
async def shop(
    fake_api: FakeKubernetes, settings: KubernetesSettings, backends: Any, balancers: Any
) -> AsyncIterator[Shop]:
    pods = {name: await backends(name) for name in ("inventory-a", "inventory-b", "inventory-c")}
    config = config_from_dict(
        {
            "balancer": {"id": "b0"},
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [{"name": SERVICE, "discover_unary_methods": False,
                          "discovery": {"kind": "kubernetes", "service": SERVICE}}],
            "admin": {"address": "127.0.0.1:0", "token": ADMIN_TOKEN},
        },
        {},
    )  # fmt: skip
    fake_api.put_deployment(deployment(SERVICE, replicas=2))
    balancer = await balancers(config, discovery=kubernetes_discovery(settings))
    running = Shop(fake_api, balancer, pods)
    running.serve("inventory-a")
    running.serve("inventory-b")
    platform = KubernetesPlatform(settings)
    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=250):
        plane = ControlPlane(
            collector_config({"b0": balancer.admin_address or ""}, ADMIN_TOKEN), platform
        )
        await plane.start()
        try:
            await wait_for(lambda: _frame_ready() == {"inventory-a", "inventory-b"}, 30, "READY")
            yield running
        finally:
            await plane.stop()


async def _finished(operation_id: int) -> Operation:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (op := await Operation.objects.aget(pk=operation_id)).running:
        assert loop.time() < deadline, f"the operation did not finish: {op.step} {op.detail}"
        await asyncio.sleep(0.1)
    return op


async def test_a_restart_evicts_the_pod_and_waits_for_its_replacement(shop: Shop) -> None:
    def replicaset(namespace: str, name: str) -> None:
        """The ReplicaSet's answer to the eviction: the old pod leaves the slices, a new one
        comes (it runs on the spare backend)."""
        shop.fake.delete_slice(f"{SERVICE}-{name}", namespace)
        shop.serve("inventory-c")

    shop.fake.on_evicted = replicaset

    operation = await sync_to_async(start_restart)(ALICE, SERVICE, "inventory-a")
    op = await _finished(operation.pk)

    assert (op.step, op.detail, op.new_pod) == ("done", "", "inventory-c"), op.detail
    evictions = [r for r in shop.fake.received("POST", "/eviction$") if "dryRun" not in r.query]
    assert [r.path for r in evictions] == ["/api/v1/namespaces/shop/pods/inventory-a/eviction"]
    assert not shop.fake.received("DELETE", "")
    assert shop.state("inventory-a") is None
    assert shop.state("inventory-c") is State.READY


async def test_a_restart_a_disruption_budget_refuses_fails_with_the_reason_undrained(
    shop: Shop,
) -> None:
    shop.fake.refused_evictions.add("inventory-a")
    shop.fake.refuse_dry_runs = False  # the budget allowed it when the restart began

    operation = await sync_to_async(start_restart)(ALICE, SERVICE, "inventory-a")
    op = await _finished(operation.pk)

    assert op.step == "failed"
    assert "was not evicted: Cannot evict pod as it would violate the pod's disruption" in (
        op.detail
    )
    evictions = [r for r in shop.fake.received("POST", "/eviction$") if "dryRun" not in r.query]
    assert len(evictions) == 1  # not retried
    assert not shop.fake.received("DELETE", "")
    await wait_for(lambda: shop.state("inventory-a") is State.READY, 10, "undrained")
    audit = [(e.action, e.result) async for e in AuditEvent.objects.order_by("id")]
    assert audit[-1] == ("restart", "failed")
    ended = await AuditEvent.objects.filter(action="restart").order_by("id").alast()
    assert ended is not None and "disruption budget" in ended.detail
