"""Pod facts, eviction, rollout restart and scale through the fake API server."""

from __future__ import annotations

import logging

import pytest

from platforms.base import PlatformError, UnknownDeployment, UnknownPod
from platforms.kubernetes import EvictionRefused, KubernetesPlatform
from platforms.kubernetes.platform import RESTARTED_AT
from tests.kubernetes.fakeapi import FakeKubernetes
from tests.kubernetes.workloads import deployment, pod

pytestmark = pytest.mark.timeout(60)

OOM = {
    "reason": "OOMKilled",
    "exitCode": 137,
    "startedAt": "2026-01-01T00:00:40Z",
    "finishedAt": "2026-01-01T00:00:50Z",
}


@pytest.fixture
def shop(fake_api: FakeKubernetes) -> FakeKubernetes:
    fake_api.put_deployment(deployment("inventory", replicas=2))
    fake_api.put_pod(pod("inventory-b", ip="10.0.0.2", created="2026-01-01T00:00:02Z",
                         restarts=(2, 1), terminated=OOM))  # fmt: skip
    fake_api.put_pod(pod("inventory-a", ip="10.0.0.1", created="2026-01-01T00:00:01Z"))
    fake_api.put_pod(pod("checkout-a", app="checkout", ip="10.0.0.9"))
    return fake_api


async def test_it_reports_pod_facts_with_oomkilled(
    shop: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    shop.set_metrics("inventory-b", cpu="250m", memory="100Mi", namespace="shop")

    facts = await platform.list_pods("inventory")

    assert [p.name for p in facts] == ["inventory-a", "inventory-b"]  # oldest first
    b = facts[1]
    assert (b.phase, b.ready, b.restart_count, b.node) == ("Running", True, 3, "node-1")
    assert (b.last_termination_reason, b.last_termination_exit_code) == ("OOMKilled", 137)
    assert b.last_terminated_at_s == 1767225650.0  # 2026-01-01T00:00:50Z
    assert b.started_at_s == 1767225630.0
    assert b.address == "10.0.0.2:50051"
    assert b.metrics_address == "10.0.0.2:9100"
    assert b.memory_limit_bytes == 2 * 256 * 1024 * 1024  # two containers
    assert (b.cpu_millicores, b.memory_bytes) == (250.0, 100 * 1024 * 1024)
    assert facts[0].cpu_millicores is None  # no PodMetrics for it yet
    assert platform.metrics_available is True
    assert platform.usage_note is None


async def test_it_leaves_figures_missing_without_metrics_server_and_says_so_once(
    shop: FakeKubernetes, platform: KubernetesPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    shop.metrics_installed = False

    with caplog.at_level(logging.WARNING):
        first = await platform.list_pods("inventory")
        await platform.list_pods("shop/inventory")

    assert all(p.cpu_millicores is None and p.memory_bytes is None for p in first)
    assert platform.metrics_available is False
    assert sum("metrics.k8s.io is not served" in r.message for r in caplog.records) == 1
    # What the service page shows instead of zeros.
    assert platform.usage_note is not None and "metrics-server" in platform.usage_note


async def test_it_names_an_unknown_deployment(platform: KubernetesPlatform) -> None:
    with pytest.raises(UnknownDeployment, match="shop/nope"):
        await platform.list_pods("nope")


async def test_it_restarts_a_pod_by_eviction(
    shop: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    await platform.restart_pod("inventory-a")

    evictions = shop.received("POST", "/pods/inventory-a/eviction$")
    assert len(evictions) == 1
    assert evictions[0].body["metadata"] == {"name": "inventory-a", "namespace": "shop"}
    assert shop.pod("inventory-a", "shop") is None
    assert not shop.received("DELETE", "pods")  # evicted, never deleted


async def test_it_refuses_clearly_when_a_disruption_budget_forbids_eviction(
    shop: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    shop.refused_evictions.add("inventory-a")

    with pytest.raises(EvictionRefused, match="disruption budget") as raised:
        await platform.restart_pod("inventory-a")

    assert "shop/inventory-a was not evicted" in str(raised.value)
    assert len(shop.received("POST", "/eviction$")) == 1  # not retried
    assert shop.pod("inventory-a", "shop") is not None


async def test_it_names_an_unknown_pod(platform: KubernetesPlatform) -> None:
    with pytest.raises(UnknownPod, match="shop/ghost"):
        await platform.restart_pod("ghost")


async def test_it_restarts_a_rollout_and_follows_its_progress(
    shop: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    seen: list[str] = []

    await platform.rollout_restart("inventory", progress=seen.append)

    patch = shop.received("PATCH", "/deployments/inventory$")[0]
    assert patch.content_type == "application/strategic-merge-patch+json"
    annotations = patch.body["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {RESTARTED_AT}
    stored = shop.deployment("inventory", "shop")
    assert stored is not None
    assert stored["spec"]["template"]["metadata"]["annotations"] == annotations
    assert stored["metadata"]["generation"] == 2
    assert seen == [
        "0 of 2 new replicas have been updated",
        "1 of 2 new replicas have been updated",
        "1 old replicas are pending termination",
        "successfully rolled out (2 replicas)",
    ]


async def test_it_gives_up_on_a_rollout_that_does_not_progress(
    shop: FakeKubernetes, fake_api: FakeKubernetes, settings: object
) -> None:
    from dataclasses import replace

    from platforms.kubernetes import KubernetesSettings

    assert isinstance(settings, KubernetesSettings)
    stuck = KubernetesPlatform(replace(settings, rollout_timeout_s=0.5))
    fake_api.put_deployment(
        {**deployment("stuck"), "status": {"observedGeneration": 0}}
    )  # a controller that never observes it: the fake only advances after a template patch

    with pytest.raises(PlatformError, match=r"rollout not complete after 0\.5 s"):
        await stuck._follow_rollout("shop", "stuck", lambda _: None)


async def test_it_scales_through_the_scale_subresource(
    shop: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    await platform.scale("inventory", 5)

    scale = shop.received("PATCH", "/deployments/inventory/scale$")
    assert [r.body for r in scale] == [{"spec": {"replicas": 5}}]
    stored = shop.deployment("inventory", "shop")
    assert stored is not None and stored["spec"]["replicas"] == 5
    with pytest.raises(PlatformError, match="0 or more"):
        await platform.scale("inventory", -1)
    with pytest.raises(UnknownDeployment):
        await platform.scale("nope", 1)


async def test_it_evicts_a_pod_in_the_namespace_it_was_listed_in(
    fake_api: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    fake_api.put_deployment(deployment("inventory", namespace="prod"))
    fake_api.put_pod(pod("inventory-p", namespace="prod"))
    await platform.list_pods("prod/inventory")

    await platform.restart_pod("inventory-p")

    assert [r.path for r in fake_api.received("POST", "/eviction$")] == [
        "/api/v1/namespaces/prod/pods/inventory-p/eviction"
    ]
