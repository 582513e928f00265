"""The xDS badge: "xDS clients: 2, all on version V", from real clients' ACKs and NACKs.

Real grpcio proxyless clients follow an in-process balancer's xDS server; the
admin snapshot they show is turned into the frame's `xds` part
(`dashboard.collector.xds`), whose words the overview and the service page show.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.server import Balancer
from balancer.xds.resources import CLUSTER, build_resources
from dashboard.collector.frames import XdsFrame
from dashboard.collector.xds import xds_frame, xds_label
from tests.support.balancing import ADMIN_TOKEN, config

pytestmark = pytest.mark.timeout(120)

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


class Page:
    """What the badge would say, from the replica's admin snapshots (as the collector does)."""

    def __init__(self, stub: admin_pb2_grpc.AdminStub) -> None:
        self.stub = stub
        self.frame: XdsFrame = {"clients": 0, "in_sync": 0, "fallback": False}

    async def refresh(self) -> str:
        snapshot = await self.stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
        self.frame = xds_frame([("b1", snapshot)], "echo")
        return self.frame.get("label", "")

    async def until(self, check: Callable[[str], bool], what: str, timeout_s: float = 30) -> str:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not check(label := await self.refresh()):
            assert asyncio.get_running_loop().time() < deadline, f"{what}; badge: {label!r}"
            await asyncio.sleep(0.05)
        return label


@pytest.fixture
async def page(backends, balancers) -> AsyncIterator[tuple[Balancer, Page]]:
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], admin={}, xds={"address": "127.0.0.1:0"}))
    assert balancer.admin_address is not None
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        yield balancer, Page(admin_pb2_grpc.AdminStub(channel))


def _eds_version(balancer: Balancer) -> str:
    assert balancer.xds is not None
    return balancer.xds.snapshot().version(
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    )


async def test_it_says_every_client_is_on_the_version_a_weight_change_made(page, xds_clients):
    balancer, badge = page
    for node in ("client-1", "client-2"):
        await (await xds_clients(balancer, node)).request(op="calls", n=10)
    first = _eds_version(balancer)
    await badge.until(lambda s: s == f"xDS clients: 2, all on version {first}", "both ACKed")

    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-a", weight=300)
    await badge.stub.SetWeight(request, metadata=AUTH)

    second = str(int(first) + 1)
    label = await badge.until(lambda s: f"version {second}" in s, "the weight's version")
    if label != f"xDS clients: 2, all on version {second}":  # caught between two ACKs
        assert label == f"xDS clients: 1 of 2 on version {second}; client client-1 on {first}" or (
            label == f"xDS clients: 1 of 2 on version {second}; client client-2 on {first}"
        )
        await badge.until(lambda s: s.endswith(f"all on version {second}"), "both ACKed it")
    assert badge.frame["versions"] == {"b1": second} and badge.frame["lagging"] == []


async def test_it_names_the_clients_that_nacked_and_their_error(page, xds_clients):
    balancer, badge = page
    await (await xds_clients(balancer, "client-1")).request(op="calls", n=10)
    await badge.until(lambda s: "all on version" in s, "ACKed")

    assert balancer.xds is not None
    invalid = build_resources(balancer.clusters.values())
    invalid[CLUSTER]["echo"].type = cluster_pb2.Cluster.DiscoveryType.STATIC  # gRPC: EDS only
    balancer.xds.cache.set_snapshot(invalid)
    bad = balancer.xds.snapshot().version(CLUSTER)

    label = await badge.until(lambda s: "NACKed" in s, "the NACK shown")
    (lag,) = badge.frame["lagging"]
    assert lag["node"] == "client-1" and lag["nack"].startswith(f"CDS {bad}: ")
    assert len(lag["nack"]) > len(f"CDS {bad}: ")  # the client's own words
    assert label == f"xDS clients: 0 of 1 on version {_eds_version(balancer)}; " + (
        f"client client-1 NACKed {lag['nack']}"
    )


def test_it_lists_the_versions_of_replicas_that_serve_different_ones() -> None:
    xds: XdsFrame = {
        "clients": 4,
        "in_sync": 4,
        "fallback": True,
        "versions": {"b2": "7", "b1": "12"},
        "lagging": [],
    }
    assert xds_label(xds) == (
        "xDS clients: 4, all on the versions served (b1: 12, b2: 7)"
        " (round robin: they cannot follow the policy)"
    )


def test_it_counts_the_lagging_clients_it_does_not_name() -> None:
    lagging = [{"node": f"n{i}", "replica": "b1", "version": "3"} for i in range(3)]
    xds: XdsFrame = {
        "clients": 9,
        "in_sync": 4,
        "fallback": False,
        "versions": {"b1": "4"},
        "lagging": lagging,  # type: ignore[typeddict-item]
    }
    assert xds_label(xds) == (
        "xDS clients: 4 of 9 on version 4; client n0 on 3; client n1 on 3; client n2 on 3;"
        " 2 more behind"
    )


async def test_the_admin_snapshot_names_each_clusters_xds_clients(page, xds_clients):
    balancer, badge = page
    await (await xds_clients(balancer, "client-1")).request(op="calls", n=5)
    await badge.until(lambda s: "all on version" in s, "ACKed")

    snapshot = await badge.stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
    (client,) = snapshot.xds_clients
    assert list(snapshot.clusters[0].xds_client_peers) == [client.peer]
