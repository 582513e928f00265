"""What the API reads back: services, pods, stats over a window, replicas, the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from dashboard.control.models import AuditEvent
from tests.control.conftest import PODS, SERVICE, Api, calls_per_pod
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_lists_the_services_from_their_newest_frame(api: Api) -> None:
    await wait_for(lambda: api.frame()["replicas"][0]["converged"], what="b0 judged converged")
    reply = await api.call("GET", "/api/v1/services/")
    [service] = reply.body
    assert service["name"] == SERVICE
    assert (service["pods"], service["ready"], service["policy"]) == (3, 3, "round_robin")
    assert service["policy_override"] is None
    assert service["replicas"] == [{"id": "b0", "up": True, "converged": True}]
    assert service["updated"] <= api.frame()["t"]
    assert set(service["imbalance"]) == {"max_mean", "cv", "busiest", "flagged"}


async def test_a_service_without_a_frame_yet_has_its_name_and_nulls(api: Api) -> None:
    from django.test import override_settings

    with override_settings(BALLAST_SERVICES=[SERVICE, "payments"]):
        reply = await api.call("GET", "/api/v1/services/payments/")
    assert reply.status == 200
    assert reply.body["name"] == "payments"
    assert {k: v for k, v in reply.body.items() if k != "name"} == dict.fromkeys(
        set(reply.body) - {"name"}
    )


async def test_it_lists_the_pods_with_their_figures_and_desired_state(api: Api) -> None:
    await api.call("POST", f"/api/v1/services/{SERVICE}/pods/pod-b/drain", {"timeout_s": 3})
    reply = await api.call("GET", f"/api/v1/services/{SERVICE}/pods/")
    pods = {p["pod"]: p for p in reply.body}
    assert set(pods) == set(PODS)
    assert pods["pod-a"]["desired"] is None
    assert pods["pod-a"]["weight"] == 100
    desired = pods["pod-b"]["desired"]
    assert (desired["drained"], desired["drain_timeout_s"], desired["updated_by"]) == (
        True, 3.0, "operator"
    )  # fmt: skip


async def test_stats_are_means_over_the_window(api: Api) -> None:
    await calls_per_pod(api, 300)
    reply = await api.call("GET", f"/api/v1/services/{SERVICE}/stats/?window_s=900")
    assert reply.status == 200
    assert reply.body["window_s"] == 900
    assert reply.body["frames"] >= 1
    pods = {p["pod"]: p for p in reply.body["pods"]}
    assert set(pods) == set(PODS)
    assert all(1 <= p["frames"] <= reply.body["frames"] for p in pods.values())
    assert all(p["rps"] is not None and p["rps"] >= 0 for p in pods.values())


@sync_to_async
def _events(count: int) -> None:
    now = timezone.now()
    for i in range(count):
        event = AuditEvent.objects.create(
            actor="alice" if i % 2 else "bob", source="api", action="set_weight",
            service=SERVICE, target=f"pod-{i}", result="ok",
        )  # fmt: skip
        AuditEvent.objects.filter(pk=event.pk).update(at=now - timedelta(minutes=count - i))


async def test_the_audit_log_is_paginated_newest_first_and_filtered(api: Api) -> None:
    await _events(60)
    first = await api.call("GET", "/api/v1/audit/")
    assert first.body["count"] == 60
    assert len(first.body["results"]) == 50
    assert first.body["results"][0]["target"] == "pod-59"
    assert first.body["next"].endswith("/api/v1/audit/?page=2")
    second = await api.call("GET", "/api/v1/audit/?page=2")
    assert [e["target"] for e in second.body["results"]][-1] == "pod-0"

    alice = await api.call("GET", "/api/v1/audit/?actor=alice&target=pod-7")
    assert [e["target"] for e in alice.body["results"]] == ["pod-7"]
    since = (timezone.now() - timedelta(minutes=3, seconds=30)).isoformat()
    recent = await api.call("GET", "/api/v1/audit/?since=" + since.replace("+", "%2B"))
    assert [e["target"] for e in recent.body["results"]] == ["pod-59", "pod-58", "pod-57"]
    until = (timezone.now() - timedelta(minutes=59, seconds=30)).isoformat()
    old = await api.call("GET", "/api/v1/audit/?until=" + until.replace("+", "%2B"))
    assert [e["target"] for e in old.body["results"]] == ["pod-0"]
    bad = await api.call("GET", "/api/v1/audit/?since=yesterday")
    assert bad.status == 400
    assert "since" in bad.body["detail"]
