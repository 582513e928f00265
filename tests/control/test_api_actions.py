"""What each action does to a running balancer and the calls it carries, and what the
API answers about it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async

from balancer.server import Balancer
from dashboard.app.overview import STALE_INTERVALS
from dashboard.control import actions
from dashboard.control.models import AuditEvent, ClusterOverride, EndpointOverride, Operation
from tests.control.conftest import (
    OPERATOR_SESSION,
    SERVICE,
    Api,
    balancer_config,
    calls_per_pod,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PODS_URL = f"/api/v1/services/{SERVICE}/pods/"


def pod_url(pod: str, action: str = "") -> str:
    return f"{PODS_URL}{pod}/{action}"


@sync_to_async
def _overrides() -> list[EndpointOverride]:
    return list(EndpointOverride.objects.all())


@sync_to_async
def _audit(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


async def test_a_weight_changes_the_balancers_weight_and_the_shares_follow(api: Api) -> None:
    reply = await api.call("POST", pod_url("pod-a", "weight"), {"weight": 300})
    assert reply.status == 200
    assert reply.body["result"] == "ok"
    assert reply.body["state"]["weight"] == 300
    assert reply.body["replicas"] == [
        {"replica": "b0", "applied": True, "pending": False, "error": ""}
    ]
    assert api.endpoint("pod-a").weight == 300
    counts = await calls_per_pod(api, 500)
    assert counts["pod-a"] > 2 * counts["pod-b"]
    assert counts["pod-a"] > 2 * counts["pod-c"]
    pod = await api.call("GET", pod_url("pod-a"))
    assert pod.body["desired"]["weight"] == 300
    assert pod.body["desired"]["updated_by"] == "operator"


async def test_a_drained_pod_gets_no_new_calls_until_undrained(api: Api) -> None:
    reply = await api.call("POST", pod_url("pod-b", "drain"), {"timeout_s": 5})
    assert reply.status == 200
    assert reply.body["state"] == {
        "weight": None, "drained": True, "drain_timeout_s": 5.0, "expires_at": None
    }  # fmt: skip
    assert api.endpoint("pod-b").state.value in ("DRAINING", "DRAINED")
    counts = await calls_per_pod(api, 200)
    assert counts["pod-b"] == 0
    assert counts["pod-a"] > 0 and counts["pod-c"] > 0

    reply = await api.call("POST", pod_url("pod-b", "undrain"))
    assert reply.status == 200
    await wait_for(lambda: api.endpoint("pod-b").state.value == "READY", what="pod-b READY")
    counts = await calls_per_pod(api, 200)
    assert counts["pod-b"] > 0
    assert await _overrides() == []


async def test_draining_twice_is_no_error_and_two_audit_entries(api: Api) -> None:
    for _ in range(2):
        reply = await api.call("POST", pod_url("pod-c", "drain"))
        assert reply.status == 200
    assert len(await _audit("drain")) == 2
    assert [o.drained for o in await _overrides()] == [True]


async def test_clearing_an_override_restores_the_weight_and_undrains(api: Api) -> None:
    await api.call("POST", pod_url("pod-c", "weight"), {"weight": 700})
    await api.call("POST", pod_url("pod-c", "drain"))
    assert api.endpoint("pod-c").weight == 700
    reply = await api.call("DELETE", pod_url("pod-c", "override"), who=OPERATOR_SESSION)
    assert reply.status == 200
    assert reply.body["state"] == {}
    assert api.endpoint("pod-c").weight == 100
    await wait_for(lambda: api.endpoint("pod-c").state.value == "READY", what="pod-c READY")
    assert await _overrides() == []
    pod = await api.call("GET", pod_url("pod-c"))
    assert pod.body["desired"] is None


async def test_a_policy_changes_the_clusters_policy_until_cleared(api: Api) -> None:
    url = f"/api/v1/services/{SERVICE}/policy"
    reply = await api.call("PUT", url, {"policy": "least_request", "expires_in_s": 600})
    assert reply.status == 200
    assert api.balancer.clusters[SERVICE].policy == "least_request"

    def frame_policy() -> object:
        return api.frame().get("policy")

    await wait_for(lambda: frame_policy() == "least_request", what="the frame's policy")
    service = await api.call("GET", f"/api/v1/services/{SERVICE}/")
    assert service.body["policy"] == "least_request"
    assert service.body["policy_override"]["policy"] == "least_request"
    assert service.body["policy_override"]["expires_at"] is not None

    reply = await api.call("DELETE", url)
    assert reply.status == 200
    assert api.balancer.clusters[SERVICE].policy == "round_robin"
    assert await sync_to_async(ClusterOverride.objects.count)() == 0


async def test_two_operators_at_once_leave_one_row_and_two_audit_entries(api: Api) -> None:
    weights = (200, 400)
    replies = await asyncio.gather(
        *(api.call("POST", pod_url("pod-a", "weight"), {"weight": w}) for w in weights)
    )
    assert [r.status for r in replies] == [200, 200]
    [row] = await _overrides()
    assert row.weight in weights
    assert len(await _audit("set_weight")) == 2
    # The balancer ends at the weight saved last (the reconciler closes any gap).
    await wait_for(lambda: api.endpoint("pod-a").weight == row.weight, what="the saved weight")


@sync_to_async
def _running(kind: str, target: str) -> Operation:
    """An operation in its draining step, as the operations code records one."""
    return Operation.objects.create(
        kind=kind, service=SERVICE, target=target, step="draining", actor="operator"
    )


async def test_undrain_or_clear_of_a_pod_while_its_restart_runs_is_refused(api: Api) -> None:
    await api.call("POST", pod_url("pod-a", "drain"))
    await _running("restart", "pod-a")
    for method, url in (("POST", pod_url("pod-a", "undrain")),
                        ("DELETE", pod_url("pod-a", "override"))):  # fmt: skip
        reply = await api.call(method, url)
        assert reply.status == 409
        assert reply.body["detail"].startswith("a restart of pod-a is running (draining)")
    assert api.endpoint("pod-a").state.value in ("DRAINING", "DRAINED")
    # Other pods are the operator's as before.
    assert (await api.call("POST", pod_url("pod-b", "undrain"))).status == 200


async def test_undrain_of_any_pod_while_a_rollout_runs_is_refused(api: Api) -> None:
    await _running("rollout_restart", SERVICE)
    reply = await api.call("POST", pod_url("pod-c", "undrain"))
    assert reply.status == 409
    assert reply.body["detail"].startswith(f"a rollout restart of {SERVICE} is running")


async def test_the_operation_itself_may_undo_its_drain(api: Api) -> None:
    actor = actions.Actor("operator", AuditEvent.Source.SYSTEM)
    await sync_to_async(actions.drain)(actor, SERVICE, "pod-a")
    await _running("restart", "pod-a")
    outcome = await sync_to_async(actions.undrain)(actor, SERVICE, "pod-a", force=True)
    assert outcome.audit.result == "ok"
    assert api.endpoint("pod-a").state.value == "READY"


async def test_an_act_pending_on_a_down_replica_says_when_it_was_applied(
    api: Api, balancers: Callable[..., Awaitable[Balancer]]
) -> None:
    admin_address = api.balancer.admin_address or ""
    await api.balancer.stop(grace_s=0)
    await wait_for(lambda: api.plane.collector.snapshots()["b0"] is None, what="b0 down")
    reply = await api.call("POST", pod_url("pod-a", "weight"), {"weight": 300})
    assert reply.status == 503
    event = await sync_to_async(AuditEvent.objects.get)(pk=reply.body["audit_id"])
    assert (event.result, event.pending_replicas) == ("pending", ["b0"])

    again = await balancers(balancer_config(list(api.pods.values()), admin=admin_address))
    await wait_for(lambda: again.clusters[SERVICE].endpoints["pod-a"].weight == 300)

    def applied() -> bool:
        return AuditEvent.objects.get(pk=event.pk).result == "ok"

    await wait_for_db(applied, what="the event settled")
    event = await sync_to_async(AuditEvent.objects.get)(pk=event.pk)
    assert event.pending_replicas == []
    assert "; applied on b0 at " in event.detail


async def wait_for_db(predicate: Callable[[], bool], what: str) -> None:
    """`wait_for` for a predicate that reads the database (in a worker thread)."""
    check = sync_to_async(predicate)
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_collector_that_stopped_speaks_for_no_replica(api: Api) -> None:
    """Its last frame said converged; once that frame is stale, nothing is claimed —
    in the service's summary as in the replicas' list (and the overview)."""
    await wait_for(lambda: api.frame()["replicas"][0]["converged"] is True, what="converged")
    await api.plane.reconciler.stop()
    await api.plane.collector.stop()
    stale_ms = STALE_INTERVALS * 250  # the fixture's collector interval
    await wait_for(lambda: time.time() * 1000 - api.frame()["t"] > stale_ms, what="stale")

    service = await api.call("GET", f"/api/v1/services/{SERVICE}/")
    assert service.body["replicas"] == [{"id": "b0", "up": None, "converged": None}]
    listed = await api.call("GET", "/api/v1/replicas/")
    assert [(r["id"], r["converged"]) for r in listed.body] == [("b0", None)]
