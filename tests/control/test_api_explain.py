"""Explain and preview through the REST API, over a real balancer of three pods: why a
pod gets its share, and what a weight or a drain would do before it is applied."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.control.conftest import (
    ANONYMOUS,
    OPERATOR_SESSION,
    SERVICE,
    VIEWER_SESSION,
    VIEWER_TOKEN,
    Api,
    calls_per_pod,
)

pytestmark = pytest.mark.django_db(transaction=True)

PODS_URL = f"/api/v1/services/{SERVICE}/pods/"


def pod_url(pod: str, action: str = "") -> str:
    return f"{PODS_URL}{pod}/{action}"


async def _audit_rows(api: Api) -> list[object]:
    """The audit log as the API lists it (not the ORM: its reads would hold SQLite's
    in-memory tables against the server's writes)."""
    reply = await api.call("GET", "/api/v1/audit/")
    assert reply.status == 200
    rows: list[object] = reply.body["results"]
    return rows


async def _overrides(api: Api) -> list[object]:
    reply = await api.call("GET", PODS_URL)
    return [p["desired"] for p in reply.body if p["desired"] is not None]


async def _explain(api: Api, pod: str, who: str = VIEWER_TOKEN) -> Any:
    reply = await api.call("GET", pod_url(pod, "explain/"), who=who)
    assert reply.status == 200, reply.body
    return reply.body


async def test_it_explains_a_pods_share_to_anyone_who_may_read(api: Api) -> None:
    for who in (VIEWER_TOKEN, VIEWER_SESSION, OPERATOR_SESSION):
        why = await _explain(api, "pod-a", who)
        assert (why["pod"], why["policy"], why["share_basis"]) == (
            "pod-a", "round_robin", "weights"
        )  # fmt: skip
        (replica,) = why["replicas"]
        assert replica["replica"] == "b0"
        assert (replica["state"], replica["weight"], replica["slow_start_factor"]) == (
            "READY", 100, 1.0
        )  # fmt: skip
        assert replica["expected_share"] == pytest.approx(1 / 3, abs=1e-3)
        assert replica["last_ejected"] is None and replica["ejections_total"] == 0
        assert "expected share 33.3 % (round_robin: by weights)" in str(why["summary"])
    reply = await api.call("GET", pod_url("pod-a", "explain/"), who=ANONYMOUS)
    assert reply.status == 401


async def test_it_explains_a_drained_pod_and_the_shares_its_siblings_took(api: Api) -> None:
    assert (await api.call("POST", pod_url("pod-c", "drain"), {})).status == 200

    # The collector's snapshot follows within an interval (250 ms here).
    deadline = asyncio.get_running_loop().time() + 20
    while (why := await _explain(api, "pod-c"))["replicas"][0]["state"] != "DRAINED":
        assert asyncio.get_running_loop().time() < deadline, "pod-c never showed DRAINED"
        await asyncio.sleep(0.1)
    replica = why["replicas"][0]
    assert replica["expected_share"] == 0.0
    assert replica["state_reason"] in ("drained by operator", "no calls in flight")
    assert "no new requests" in str(why["summary"])
    a = (await _explain(api, "pod-a"))["replicas"][0]
    assert a["expected_share"] == pytest.approx(0.5, abs=1e-3)


async def test_it_answers_404_naming_the_pods_for_an_unknown_pod(api: Api) -> None:
    reply = await api.call("GET", pod_url("pod-z", "explain/"))
    assert reply.status == 404
    assert reply.body == {
        "detail": "service 'inventory' has no pod 'pod-z' behind its balancers: pod-a, pod-b, pod-c"
    }
    reply = await api.call("GET", pod_url("Pod_Z!", "explain/"))
    assert reply.status == 400
    assert "is not valid" in reply.body["detail"]
    reply = await api.call("GET", "/api/v1/services/nope/pods/pod-a/explain/")
    assert reply.status == 404


async def test_a_dry_run_weight_changes_nothing_and_predicts_the_shares(api: Api) -> None:
    reply = await api.call("POST", pod_url("pod-a", "weight") + "?dry_run=1", {"weight": 300})
    assert reply.status == 200, reply.body
    preview = reply.body
    assert (preview["dry_run"], preview["action"], preview["pod"]) == (True, "set_weight", "pod-a")
    after = {p["pod"]: p["share_after"] for p in preview["pods"]}
    assert after == {"pod-a": 0.6, "pod-b": 0.2, "pod-c": 0.2}
    before = {p["pod"]: p["share"] for p in preview["pods"]}
    assert before == pytest.approx({"pod-a": 1 / 3, "pod-b": 1 / 3, "pod-c": 1 / 3}, abs=1e-3)
    assert preview["warnings"] == []
    # Nothing reached a replica, nothing saved, nothing audited.
    assert api.endpoint("pod-a").weight == 100
    assert await _overrides(api) == []
    assert await _audit_rows(api) == []
    counts = await calls_per_pod(api, 300)
    assert counts == {"pod-a": 100, "pod-b": 100, "pod-c": 100}

    # Applied, the balancer does what the preview said.
    assert (await api.call("POST", pod_url("pod-a", "weight"), {"weight": 300})).status == 200
    counts = await calls_per_pod(api, 1000)
    for pod, share in after.items():
        assert counts[pod] / 1000 == pytest.approx(share, abs=0.02), counts


async def test_a_dry_run_drain_predicts_the_shares_and_changes_nothing(api: Api) -> None:
    reply = await api.call("POST", pod_url("pod-b", "drain") + "?dry_run=1", {})
    assert reply.status == 200, reply.body
    after = {p["pod"]: p["share_after"] for p in reply.body["pods"]}
    assert after == {"pod-a": 0.5, "pod-b": 0.0, "pod-c": 0.5}
    assert reply.body["warnings"] == []  # two READY pods left: the default floor
    assert api.endpoint("pod-b").state.value == "READY"
    assert await _audit_rows(api) == []

    assert (await api.call("POST", pod_url("pod-b", "drain"), {})).status == 200
    counts = await calls_per_pod(api, 400)
    assert counts["pod-b"] == 0
    assert counts["pod-a"] / 400 == pytest.approx(0.5, abs=0.02)


async def test_a_drain_preview_warns_below_the_ready_floor(api: Api) -> None:
    url = pod_url("pod-b", "drain") + "?dry_run=1&min_ready=3"
    reply = await api.call("POST", url, {})
    assert reply.status == 200
    assert reply.body["min_ready"] == 3
    assert reply.body["warnings"] == [
        {
            "kind": "ready_floor",
            "pod": None,
            "text": "draining pod-b leaves 2 READY pods taking requests, fewer than the floor of 3",
        }
    ]
    assert await _audit_rows(api) == []


async def test_a_dry_run_refuses_a_bad_weight_or_query_with_400(api: Api) -> None:
    url = pod_url("pod-a", "weight") + "?dry_run=1"
    reply = await api.call("POST", url, {"weight": 20000})
    assert reply.status == 400
    assert reply.body["detail"].startswith("weight: ")
    assert "10000" in reply.body["detail"]
    reply = await api.call("POST", url, {"weight": "300"})
    assert reply.status == 400
    reply = await api.call("POST", pod_url("pod-a", "weight") + "?dry_run=maybe", {"weight": 5})
    assert reply.status == 400
    assert reply.body["detail"].startswith("dry_run: ")
    reply = await api.call("POST", url + "&hot_cpu_m=-1", {"weight": 5})
    assert reply.status == 400
    assert reply.body["detail"].startswith("hot_cpu_m: ")
    reply = await api.call("POST", pod_url("pod-z", "weight") + "?dry_run=1", {"weight": 5})
    assert reply.status == 404
    assert "pod-a, pod-b, pod-c" in reply.body["detail"]
    assert await _audit_rows(api) == []
    assert api.endpoint("pod-a").weight == 100


async def test_a_viewer_may_not_preview_an_act(api: Api) -> None:
    reply = await api.call(
        "POST", pod_url("pod-a", "weight") + "?dry_run=1", {"weight": 300}, who=VIEWER_TOKEN
    )
    assert reply.status == 403
    assert api.endpoint("pod-a").weight == 100


async def test_the_schema_documents_explain_and_the_dry_run(api: Api) -> None:
    reply = await api.call("GET", "/api/schema/")
    assert reply.status == 200
    paths = reply.body["paths"]
    assert "/api/v1/services/{service}/pods/{pod}/explain/" in paths
    weight = paths["/api/v1/services/{service}/pods/{pod}/weight"]["post"]
    assert "dry_run" in [p["name"] for p in weight["parameters"]]


async def test_under_least_request_the_preview_holds_at_equal_load(api: Api) -> None:
    """One call at a time keeps the load equal: the shares follow the weights, as the
    preview says (weighted random by weight ÷ load, so within a few percent)."""
    url = f"/api/v1/services/{SERVICE}/policy"
    assert (await api.call("PUT", url, {"policy": "least_request"})).status == 200
    deadline = asyncio.get_running_loop().time() + 20
    while api.frame().get("policy") != "least_request":
        assert asyncio.get_running_loop().time() < deadline, "the frame never showed the policy"
        await asyncio.sleep(0.1)
    reply = await api.call("POST", pod_url("pod-c", "weight") + "?dry_run=1", {"weight": 200})
    assert reply.body["share_basis"] == "weights at equal load"
    after = {p["pod"]: p["share_after"] for p in reply.body["pods"]}
    assert after == {"pod-a": 0.25, "pod-b": 0.25, "pod-c": 0.5}

    assert (await api.call("POST", pod_url("pod-c", "weight"), {"weight": 200})).status == 200
    counts = await calls_per_pod(api, 1200)
    for pod, share in after.items():
        assert counts[pod] / 1200 == pytest.approx(share, abs=0.05), counts
