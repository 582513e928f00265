"""The OOM guard on Kubernetes honours the PodDisruptionBudget: the platform's dry-run
eviction refuses, so nothing is drained or evicted, and the refusal is audited with the
guard's reason."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from balancer.endpoint import State
from dashboard.collector.memory import MiB, OomForecast
from dashboard.control.models import AuditEvent, Operation, ServiceAutomation
from dashboard.control.oomguard import ACTION, GuardConfig, guard_service
from platforms.base import PodFacts
from tests.kubernetes.test_operations import SERVICE, Shop, _fresh, shop

__all__ = ["_fresh", "shop"]  # the fixtures, shared with the restart's tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def ready(name: str) -> PodFacts:
    return PodFacts(name, SERVICE, "127.0.0.1:1", "Running", True, 0, 0.0,
                    memory_bytes=231 * MiB, memory_limit_bytes=256 * MiB)  # fmt: skip


async def test_it_honours_the_disruption_budget_and_audits_the_refusal(shop: Shop) -> None:
    shop.fake.refused_evictions.add("inventory-a")  # the budget allows no disruption now
    await ServiceAutomation.objects.acreate(service=SERVICE, oom_guard=True)
    due = {"inventory-a": OomForecast("inventory-a", 231 * MiB, 256 * MiB, 1.2 * MiB, 21)}
    pods = [ready("inventory-a"), ready("inventory-b")]

    event, _ = await sync_to_async(guard_service)(SERVICE, due, pods, GuardConfig())

    assert event is not None and (event.action, event.result) == (ACTION, "failed")
    assert event.detail.startswith("inventory-a: working set 231 MiB of 256 MiB")
    assert "disruption budget" in event.detail
    evictions = [r for r in shop.fake.received("POST", "/eviction$") if "dryRun" not in r.query]
    assert evictions == []
    assert not await Operation.objects.aexists()
    assert not await AuditEvent.objects.filter(action="drain").aexists()
    assert shop.state("inventory-a") is State.READY
