"""The API's refusals: JSON with a message that says what was wrong, and the right status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from dashboard.control import runtime
from dashboard.control.models import ClusterOverride, EndpointOverride, Operation
from platforms.local import LocalPlatform
from tests.control.conftest import SERVICE, Api, balancer_config, calls_per_pod
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

POD = f"/api/v1/services/{SERVICE}/pods/pod-a/"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"weight": -1}, "weight: -1 is out of range: use 0 to 10000"),
        ({"weight": 10001}, "weight: 10001 is out of range: use 0 to 10000"),
        ({"weight": "abc"}, "weight: must be a whole number from 0 to 10000"),
        ({"weight": 1.5}, "weight: must be a whole number"),
        ({"weight": True}, "weight: must be a whole number"),
        ({"weight": "300"}, "weight: must be a whole number"),
        ({}, "weight: This field is required."),
        ([300], "Invalid data. Expected a dictionary"),
        ({"weight": 300, "expires_in_s": 0}, "expires_in_s: must be a whole number of seconds"),
    ],
)
async def test_a_bad_weight_is_400_with_a_message(api: Api, body: Any, message: str) -> None:
    reply = await api.call("POST", POD + "weight", body)
    assert reply.status == 400
    assert list(reply.body) == ["detail"]
    assert message in reply.body["detail"]
    assert api.endpoint("pod-a").weight == 100


async def test_an_unknown_policy_is_400_naming_the_policies(api: Api) -> None:
    reply = await api.call("PUT", f"/api/v1/services/{SERVICE}/policy", {"policy": "fastest"})
    assert reply.status == 400
    assert reply.body == {
        "detail": "policy: 'fastest' is unknown: use one of round_robin, least_request,"
        " peak_ewma, random"
    }


async def test_a_bad_drain_timeout_and_stats_window_are_400(api: Api) -> None:
    reply = await api.call("POST", POD + "drain", {"timeout_s": -5})
    assert reply.status == 400
    assert reply.body == {"detail": "timeout_s: must be at least 0.001 seconds"}
    reply = await api.call("GET", f"/api/v1/services/{SERVICE}/stats/?window_s=901")
    assert reply.status == 400
    assert "window_s" in reply.body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/services/nope/", None),
        ("GET", "/api/v1/services/nope/pods/", None),
        ("GET", "/api/v1/services/nope/stats/", None),
        ("POST", "/api/v1/services/nope/pods/pod-a/weight", {"weight": 5}),
        ("PUT", "/api/v1/services/nope/policy", {"policy": "random"}),
        ("POST", "/api/v1/services/nope/rollout-restart", None),
    ],
)
async def test_an_unknown_service_is_404_naming_the_services(
    api: Api, method: str, path: str, body: Any
) -> None:
    reply = await api.call(method, path, body)
    assert reply.status == 404
    assert reply.body == {"detail": "unknown service 'nope': the services are inventory"}


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [("GET", "", None), ("POST", "weight", {"weight": 5}), ("POST", "drain", None),
     ("DELETE", "override", None), ("POST", "restart", None)],
)  # fmt: skip
async def test_an_unknown_pod_is_404_naming_the_pods(
    api: Api, method: str, action: str, body: Any
) -> None:
    reply = await api.call(method, f"/api/v1/services/{SERVICE}/pods/pod-z/{action}", body)
    assert reply.status == 404
    assert "no pod 'pod-z'" in reply.body["detail"]
    assert "pod-a, pod-b, pod-c" in reply.body["detail"]


async def test_restarting_without_a_platform_is_503_saying_why(api: Api) -> None:
    reply = await api.call("POST", POD + "restart")
    assert reply.status == 503
    assert "no platform is configured" in reply.body["detail"]
    assert await sync_to_async(Operation.objects.count)() == 0


async def test_restarting_while_an_operation_runs_is_409(api: Api) -> None:
    await sync_to_async(Operation.objects.create)(
        kind=Operation.Kind.ROLLOUT_RESTART, service=SERVICE, target=SERVICE, actor="alice",
        step=Operation.Step.RESTARTING,
    )  # fmt: skip
    current = runtime.current()
    runtime.install(
        loop=asyncio.get_running_loop(), replicas=current.replicas,
        collector=current.collector, platform=LocalPlatform([]),
    )  # fmt: skip
    for path in (POD + "restart", f"/api/v1/services/{SERVICE}/rollout-restart"):
        reply = await api.call("POST", path)
        assert reply.status == 409
        assert reply.body == {
            "detail": f"a rollout restart of {SERVICE} is running (restarting); wait for it"
            " to finish"
        }
    running = await api.call("GET", f"/api/v1/operations/?service={SERVICE}&running=true")
    assert [op["step"] for op in running.body["results"]] == ["restarting"]
    done = await api.call("GET", f"/api/v1/operations/?service={SERVICE}&running=false")
    assert done.body["count"] == 0


async def test_with_the_only_replica_down_an_act_is_503_pending_then_applied_on_return(
    api: Api,
) -> None:
    """The state is saved while no replica can take it, and a balancer started again on
    the same ports gets it from the reconciler."""
    reply = await api.call("POST", POD + "weight", {"weight": 300})
    assert reply.status == 200
    listen, admin = api.balancer.listen_addresses[0], api.balancer.admin_address or ""
    await api.balancer.stop(grace_s=0)
    await wait_for(lambda: api.frame()["replicas"][0]["up"] is False, what="b0 down")

    reply = await api.call("POST", f"/api/v1/services/{SERVICE}/pods/pod-b/weight", {"weight": 50})
    assert reply.status == 503
    assert reply.body["result"] == "pending"
    assert "pending" in reply.body["detail"]
    assert reply.body["replicas"] == [
        {"replica": "b0", "applied": False, "pending": True, "error": "replica is down"}
    ]
    assert reply.body["state"]["weight"] == 50
    reply = await api.call("PUT", f"/api/v1/services/{SERVICE}/policy", {"policy": "random"})
    assert (reply.status, reply.body["result"]) == (503, "pending")
    rows = await sync_to_async(
        lambda: {o.endpoint_id: o.weight for o in EndpointOverride.objects.all()}
    )()
    assert rows == {"pod-a": 300, "pod-b": 50}
    assert await sync_to_async(ClusterOverride.objects.count)() == 1
    replicas = await api.call("GET", "/api/v1/replicas/")
    assert replicas.body == [{"id": "b0", "address": admin, "up": False, "converged": None}]

    from balancer.server import Balancer

    pods = list(api.pods.values())
    again = Balancer(balancer_config(pods, listen=listen, admin=admin))
    await again.start()
    try:
        cluster = again.clusters[SERVICE]

        def converged() -> bool:
            weights = {p: e.weight for p, e in cluster.endpoints.items()}
            return weights == {"pod-a": 300, "pod-b": 50, "pod-c": 100} and (
                cluster.policy == "random"
            )

        await wait_for(converged, timeout_s=20, what="the desired state re-applied")

        async def replicas_converged() -> bool:
            reply = await api.call("GET", "/api/v1/replicas/")
            return bool(
                reply.body == [{"id": "b0", "address": admin, "up": True, "converged": True}]
            )

        await _wait_async(replicas_converged, "the replica converged")
        counts = await calls_per_pod(api, 300, again)
        assert counts["pod-a"] > counts["pod-c"] > counts["pod-b"]
    finally:
        await again.stop(grace_s=0)


async def _wait_async(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)
