"""The control plane on Kubernetes, as an API user sees it: the balancer replicas found
from their admin Service's EndpointSlices (followed as they come and go, each given the
desired state on arrival), a rollout restart by the Deployment's own rolling update,
a PodDisruptionBudget's refusal, and overrides of pods that are gone.

The fake API server serves the slices of the `inventory` Service (real backends) and of
the headless `ballast/ballast-balancer-admin` Service (real in-process balancers with
Kubernetes discovery); the dashboard runs on a free port with the control plane embedded
and is called over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import override_settings

from balancer.config import config_from_dict
from balancer.endpoint import State
from balancer.server import Balancer
from dashboard.app.collecting import BalancerService, ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control.api.base import DENIALS
from dashboard.control.models import AuditEvent, EndpointOverride
from dashboard.server import DashboardServer
from platforms.discovery import kubernetes_discovery
from platforms.kubernetes import KubernetesPlatform, KubernetesSettings
from tests.control.conftest import OPERATOR_TOKEN, Credentials, Reply, credentials, http
from tests.kubernetes.fakeapi import FakeKubernetes, endpoint
from tests.kubernetes.workloads import deployment, pod
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

__all__ = ["credentials"]  # the API's named users, a fixture of tests/control

SERVICE = "inventory"
ADMIN_SERVICE = "ballast-balancer-admin"
ADMIN_NAMESPACE = "ballast"


@dataclass
class Cluster:
    """The fake API, the pods it serves, the balancer replicas, and the dashboard."""

    fake: FakeKubernetes
    pods: dict[str, Backend]
    start_balancer: Callable[[], Awaitable[Balancer]]
    credentials: Credentials
    plane: ControlPlane | None = None
    server: DashboardServer | None = None
    replicas: dict[str, Balancer] = field(default_factory=dict)

    def serve(self, name: str) -> None:
        """The pod `name` runs and is a ready endpoint of the inventory Service."""
        second = sorted(self.pods).index(name)
        self.fake.put_pod(pod(name, ip="127.0.0.1", created=f"2026-01-01T00:00:0{second}Z"))
        self.fake.put_slice(
            f"{SERVICE}-{name}", SERVICE, [endpoint("127.0.0.1", name)],
            ports=[{"name": "grpc", "port": self.pods[name].port}], namespace="shop",
        )  # fmt: skip

    def gone(self, name: str) -> None:
        """The pod `name` is deleted: off the Service's slices and the pods."""
        self.fake.delete_slice(f"{SERVICE}-{name}", "shop")
        self.fake.delete_pod(name, "shop")

    async def add_replica(self, name: str) -> Balancer:
        """A balancer replica starts and its pod joins the admin Service's endpoints."""
        balancer = await self.start_balancer()
        self.replicas[name] = balancer
        port = int((balancer.admin_address or "").rpartition(":")[2])
        self.fake.put_slice(
            f"{ADMIN_SERVICE}-{name}", ADMIN_SERVICE, [endpoint("127.0.0.1", name)],
            ports=[{"name": "admin", "port": port}, {"name": "metrics", "port": 1}],
            namespace=ADMIN_NAMESPACE,
        )  # fmt: skip
        return balancer

    def remove_replica(self, name: str) -> None:
        """The replica's pod is gone: it leaves the admin Service's endpoints."""
        self.fake.delete_slice(f"{ADMIN_SERVICE}-{name}", ADMIN_NAMESPACE)

    def state(self, replica: str, name: str) -> State | None:
        found = self.replicas[replica].clusters[SERVICE].endpoints.get(name)
        return found.state if found is not None else None

    def weight(self, replica: str, name: str) -> int | None:
        found = self.replicas[replica].clusters[SERVICE].endpoints.get(name)
        return found.weight if found is not None else None

    async def call(self, method: str, path: str, body: Any = None) -> Reply:
        assert self.server is not None
        url = f"http://127.0.0.1:{self.server.port}{path}"
        headers = self.credentials.headers[OPERATOR_TOKEN]
        return await asyncio.to_thread(http, method, url, body, headers)

    async def replica_ids(self) -> list[str]:
        reply = await self.call("GET", "/api/v1/replicas/")
        assert reply.status == 200, reply.body
        return [r["id"] for r in reply.body]

    async def replica_status(self) -> dict[str, tuple[bool | None, bool | None]]:
        reply = await self.call("GET", "/api/v1/replicas/")
        return {r["id"]: (r["up"], r["converged"]) for r in reply.body}


@pytest.fixture
async def cluster(
    fake_api: FakeKubernetes,
    settings: KubernetesSettings,
    backends: Callable[..., Awaitable[Backend]],
    balancers: Callable[..., Awaitable[Balancer]],
    credentials: Credentials,
) -> AsyncIterator[Cluster]:
    """Two inventory pods behind one balancer replica (found, not listed), the dashboard
    with the control plane embedded on the Kubernetes platform."""
    DENIALS.reset()
    service_history.cache_clear()
    pods = {name: await backends(name) for name in ("inventory-a", "inventory-b", "inventory-c")}
    config = config_from_dict(
        {
            "balancer": {"id": "replica"},
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [{"name": SERVICE, "discover_unary_methods": False,
                          "discovery": {"kind": "kubernetes", "service": SERVICE}}],
            "admin": {"address": "127.0.0.1:0", "token": ADMIN_TOKEN},
        },
        {},
    )  # fmt: skip
    fake_api.put_deployment(deployment(SERVICE, replicas=2))
    running = Cluster(
        fake_api, pods, lambda: balancers(config, discovery=kubernetes_discovery(settings)),
        credentials,
    )  # fmt: skip
    running.serve("inventory-a")
    running.serve("inventory-b")
    await running.add_replica("ballast-balancer-0")
    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=250):
        running.plane = ControlPlane(
            collector_config({}, ADMIN_TOKEN, discovered=True),
            KubernetesPlatform(settings),
            balancers=BalancerService(f"{ADMIN_NAMESPACE}/{ADMIN_SERVICE}", "admin"),
            token=ADMIN_TOKEN,
        )
        running.server = DashboardServer(port=0, background=running.plane)
        await running.server.start()
        try:
            await wait_for(lambda: _ready_in_frame() == {"inventory-a", "inventory-b"}, 30,
                           "both pods READY in a frame")  # fmt: skip
            yield running
        finally:
            await running.server.stop()
            service_history.cache_clear()


def _ready_in_frame() -> set[str]:
    from dashboard.control import actions

    frame = actions.latest_frame(SERVICE) or {}
    return {p["pod"] for p in frame.get("pods", []) if p.get("state") == "READY"}


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _operation(c: Cluster, operation_id: int) -> dict[str, Any]:
    """The operation from the API once it has finished."""
    found: dict[str, Any] = {}

    async def finished() -> bool:
        reply = await c.call("GET", f"/api/v1/operations/{operation_id}/")
        found.update(reply.body)
        return reply.body.get("step") in ("done", "failed", "cancelled")

    await _until(finished, 60, f"operation {operation_id} to finish")
    return found


# ---- balancer replicas found, not listed -------------------------------------------------


async def test_it_finds_a_new_replica_collects_it_and_gives_it_the_desired_state(
    cluster: Cluster,
) -> None:
    assert await cluster.replica_ids() == ["ballast-balancer-0"]
    set_weight = await cluster.call(
        "POST", f"/api/v1/services/{SERVICE}/pods/inventory-a/weight", {"weight": 300}
    )
    assert set_weight.status == 200, set_weight.body

    await cluster.add_replica("ballast-balancer-1")

    async def both_up_and_converged() -> bool:
        status = await cluster.replica_status()
        return status == {"ballast-balancer-0": (True, True), "ballast-balancer-1": (True, True)}

    await _until(both_up_and_converged, 30, "both replicas up and converged")
    assert cluster.plane is not None
    assert cluster.plane.collector.streaming == ["ballast-balancer-0", "ballast-balancer-1"]
    assert cluster.weight("ballast-balancer-1", "inventory-a") == 300  # pushed on arrival
    assert cluster.weight("ballast-balancer-1", "inventory-b") == 100
    assert await cluster.replica_ids() == ["ballast-balancer-0", "ballast-balancer-1"]
    reply = await cluster.call("GET", "/api/v1/replicas/")
    addresses = {r["id"]: r["address"] for r in reply.body}
    assert addresses["ballast-balancer-1"] == cluster.replicas["ballast-balancer-1"].admin_address


async def test_it_drops_a_replica_whose_pod_is_gone_and_acts_on_the_others(
    cluster: Cluster,
) -> None:
    await cluster.add_replica("ballast-balancer-1")
    await _until(
        lambda: _ids_are(cluster, ["ballast-balancer-0", "ballast-balancer-1"]), 30, "both found"
    )

    cluster.remove_replica("ballast-balancer-0")
    await _until(lambda: _ids_are(cluster, ["ballast-balancer-1"]), 30, "replica 0 dropped")

    assert cluster.plane is not None
    assert [t.id for t in cluster.plane.collector.targets] == ["ballast-balancer-1"]
    assert cluster.plane.collector.streaming == ["ballast-balancer-1"]  # its stream stopped
    assert [t.id for t in cluster.plane.reconciler.targets] == ["ballast-balancer-1"]
    # An act pushes to the replicas there are now, and reports only them.
    drain = await cluster.call("POST", f"/api/v1/services/{SERVICE}/pods/inventory-b/drain", {})
    assert drain.status == 200, drain.body
    assert [r["replica"] for r in drain.body["replicas"]] == ["ballast-balancer-1"]
    assert drain.body["result"] == "ok"
    assert cluster.state("ballast-balancer-1", "inventory-b") in (State.DRAINING, State.DRAINED)
    # The replica that went is neither pushed to nor shown.
    assert cluster.state("ballast-balancer-0", "inventory-b") is State.READY
    frame = (await cluster.call("GET", f"/api/v1/services/{SERVICE}/")).body
    assert [r["id"] for r in frame["replicas"]] == ["ballast-balancer-1"]


async def _ids_are(cluster: Cluster, ids: list[str]) -> bool:
    return await cluster.replica_ids() == ids


# ---- rollout restart: the Deployment's own rolling update ----------------------------------


async def test_a_rollout_restart_patches_the_deployment_and_shows_its_progress(
    cluster: Cluster,
) -> None:
    started = await cluster.call("POST", f"/api/v1/services/{SERVICE}/rollout-restart")
    assert started.status == 202, started.body

    seen: list[str] = []

    async def finished() -> bool:
        body = (await cluster.call("GET", f"/api/v1/operations/{started.body['id']}/")).body
        if body["detail"] and body["detail"] not in seen:
            seen.append(body["detail"])
        return body["step"] in ("done", "failed", "cancelled")

    await _until(finished, 60, "the rollout to finish")
    op = (await cluster.call("GET", f"/api/v1/operations/{started.body['id']}/")).body

    assert op["step"] == "done", op
    assert op["detail"] == "successfully rolled out (2 replicas)"
    assert len(seen) >= 1
    patches = cluster.fake.received("PATCH", f"/deployments/{SERVICE}$")
    assert len(patches) == 1
    annotations = patches[0].body["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"kubectl.kubernetes.io/restartedAt"}
    assert not cluster.fake.received("POST", "/eviction$")  # no pod-by-pod restarts
    assert not cluster.fake.received("DELETE", "")
    audit = (await cluster.call("GET", "/api/v1/audit/?action=rollout_restart")).body["results"]
    assert (audit[0]["result"], audit[0]["detail"]) == (
        "ok", "successfully rolled out (2 replicas)",
    )  # fmt: skip


async def test_a_rollout_restart_in_progress_is_shown_in_the_operation(
    cluster: Cluster, settings: KubernetesSettings
) -> None:
    # Each read of the deployment advances the fake's rollout a step; a slow poll keeps
    # each state on the operation long enough to read it.
    assert cluster.plane is not None and cluster.plane.platform is not None
    platform = cluster.plane.platform
    assert isinstance(platform, KubernetesPlatform)
    object.__setattr__(platform, "settings", _slow(settings))
    started = await cluster.call("POST", f"/api/v1/services/{SERVICE}/rollout-restart")

    async def in_progress() -> bool:
        body = (await cluster.call("GET", f"/api/v1/operations/{started.body['id']}/")).body
        return body["step"] == "restarting" and "new replicas have been updated" in body["detail"]

    await _until(in_progress, 30, "the rollout's progress in the operation")
    op = await _operation(cluster, started.body["id"])
    assert op["step"] == "done", op


def _slow(settings: KubernetesSettings) -> KubernetesSettings:
    from dataclasses import replace

    return replace(settings, poll_interval_s=1.0)


# ---- a PodDisruptionBudget refuses -----------------------------------------------------------


async def test_a_restart_a_disruption_budget_refuses_now_is_409_with_the_reason(
    cluster: Cluster,
) -> None:
    cluster.fake.refused_evictions.add("inventory-a")

    reply = await cluster.call("POST", f"/api/v1/services/{SERVICE}/pods/inventory-a/restart")

    assert reply.status == 409, reply.body
    assert "would violate the pod's disruption budget" in reply.body["detail"]
    assert "PodDisruptionBudget" in reply.body["detail"]
    operations = (await cluster.call("GET", "/api/v1/operations/")).body["results"]
    assert operations == []  # nothing started: nothing drained
    assert cluster.state("ballast-balancer-0", "inventory-a") is State.READY
    assert not await EndpointOverride.objects.filter(endpoint_id="inventory-a").aexists()
    evictions = cluster.fake.received("POST", "/pods/inventory-a/eviction$")
    assert [r.query.get("dryRun") for r in evictions] == ["All"]  # asked, never evicted
    audit = (await cluster.call("GET", "/api/v1/audit/?action=restart")).body["results"]
    assert [(e["result"], e["target"]) for e in audit] == [("failed", "inventory-a")]
    assert "disruption budget" in audit[0]["detail"]


async def test_a_restart_of_a_pod_the_api_does_not_have_is_404(cluster: Cluster) -> None:
    cluster.fake.delete_pod("inventory-a", "shop")  # still in the slices, not a pod

    reply = await cluster.call("POST", f"/api/v1/services/{SERVICE}/pods/inventory-a/restart")

    assert reply.status == 404, reply.body
    assert reply.body["detail"] == "pod shop/inventory-a not found"
    assert cluster.state("ballast-balancer-0", "inventory-a") is State.READY


async def test_a_restart_a_budget_refuses_later_ends_failed_with_the_reason(
    cluster: Cluster,
) -> None:
    cluster.fake.refused_evictions.add("inventory-a")
    cluster.fake.refuse_dry_runs = False  # the budget allowed it when the restart began

    reply = await cluster.call("POST", f"/api/v1/services/{SERVICE}/pods/inventory-a/restart")
    assert reply.status == 202, reply.body
    op = await _operation(cluster, reply.body["id"])

    assert op["step"] == "failed"
    assert "would violate the pod's disruption budget" in op["detail"]
    assert "pod inventory-a undrained" in op["detail"]
    await wait_for(
        lambda: cluster.state("ballast-balancer-0", "inventory-a") is State.READY, 10, "undrained"
    )
    audit = (await cluster.call("GET", "/api/v1/audit/?action=restart")).body["results"]
    assert audit[0]["result"] == "failed" and "disruption budget" in audit[0]["detail"]


# ---- pods come and go with new names ---------------------------------------------------------


async def test_an_override_on_a_pod_that_is_gone_ends_audited_and_never_blocks(
    cluster: Cluster,
) -> None:
    assert cluster.plane is not None
    cluster.plane.reconciler.pod_gone_grace_s = 1.0
    for name, act, body in (("inventory-a", "weight", {"weight": 250}),
                            ("inventory-b", "drain", {})):  # fmt: skip
        reply = await cluster.call("POST", f"/api/v1/services/{SERVICE}/pods/{name}/{act}", body)
        assert reply.status == 200, reply.body

    cluster.serve("inventory-c")  # the replacement: a new pod, a new name
    cluster.gone("inventory-b")

    async def ended() -> bool:
        return not await EndpointOverride.objects.filter(endpoint_id="inventory-b").aexists()

    await _until(ended, 30, "the gone pod's override to end")
    audit = (await cluster.call("GET", "/api/v1/audit/?action=pod_gone")).body["results"]
    assert [(e["source"], e["actor"], e["target"], e["result"]) for e in audit] == [
        ("system", "ballast", "inventory-b", "ok")
    ]
    assert audit[0]["detail"].startswith("pod gone")
    assert audit[0]["before"] == {"weight": None, "drained": True}
    # The pod that is still there keeps its override; the replica converges.
    assert await EndpointOverride.objects.filter(endpoint_id="inventory-a", weight=250).aexists()

    async def converged() -> bool:
        return await cluster.replica_status() == {"ballast-balancer-0": (True, True)}

    await _until(converged, 30, "the replica converged")
    desired = (await cluster.call("GET", "/api/v1/desired-state/")).body
    assert "inventory-b" not in str(desired)


async def test_an_override_on_a_pod_that_is_only_briefly_missing_stays(
    cluster: Cluster,
) -> None:
    assert cluster.plane is not None
    cluster.plane.reconciler.pod_gone_grace_s = 3600.0
    reply = await cluster.call(
        "POST", f"/api/v1/services/{SERVICE}/pods/inventory-b/weight", {"weight": 50}
    )
    assert reply.status == 200, reply.body

    cluster.gone("inventory-b")
    await wait_for(lambda: "inventory-b" not in _ready_in_frame(), 30, "inventory-b gone")
    await asyncio.sleep(2)  # two reconciler passes with the pod missing

    assert await EndpointOverride.objects.filter(endpoint_id="inventory-b").aexists()
    assert not await AuditEvent.objects.filter(action="pod_gone").aexists()
