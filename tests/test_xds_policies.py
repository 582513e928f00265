"""Which CDS load balancing policies a real grpcio proxyless client takes: the README's table.

Ballast sends every cluster as ROUND_ROBIN over one locality per endpoint (weights as
locality weights) and says so when the cluster's policy is another one. These tests
hold the reason true for the grpcio installed: least request and random, in either
of the forms xDS has for them (the `lb_policy` enum, or `load_balancing_policy`'s
typed extensions, gRFC A52), are NACKed, with or without
`GRPC_EXPERIMENTAL_ENABLE_LEAST_REQUEST` (grpc-go's switch; C-core has none), while
round robin is taken in both forms. When a grpcio release starts taking one of them,
a test here fails: then the README's policy table and `HONOURED_POLICIES` can change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from balancer.server import Balancer
from balancer.xds.resources import CLUSTER, build_resources
from balancer.xds.server import XdsServer
from tests.support.balancing import config
from tests.support.waiting import wait_for
from tests.support.xds import XdsClientProcess, write_bootstrap

pytestmark = pytest.mark.timeout(120)

Edit = Callable[[cluster_pb2.Cluster], None]
LbPolicy = cluster_pb2.Cluster.LbPolicy


def _typed(policy: Message) -> cluster_pb2.LoadBalancingPolicy:
    packed = any_pb2.Any()
    packed.Pack(policy)
    out = cluster_pb2.LoadBalancingPolicy()
    entry = out.policies.add()
    entry.typed_extension_config.name = type(policy).__name__
    entry.typed_extension_config.typed_config.CopyFrom(packed)
    return out


def _in_localities(endpoint_policy: Message) -> cluster_pb2.LoadBalancingPolicy:
    """gRPC's shape for a per-endpoint policy under weighted localities (wrr_locality)."""
    return _typed(wrr_locality_pb2.WrrLocality(endpoint_picking_policy=_typed(endpoint_policy)))


def _enum(value: cluster_pb2.Cluster.LbPolicy.ValueType) -> Edit:
    return lambda c: setattr(c, "lb_policy", value)


def _extension(policy: cluster_pb2.LoadBalancingPolicy) -> Edit:
    return lambda c: c.load_balancing_policy.CopyFrom(policy)


NACKED: dict[str, Edit] = {
    "LEAST_REQUEST": _enum(LbPolicy.LEAST_REQUEST),
    "RANDOM": _enum(LbPolicy.RANDOM),
    "least_request extension": _extension(_typed(least_request_pb2.LeastRequest())),
    "least_request in wrr_locality": _extension(_in_localities(least_request_pb2.LeastRequest())),
    "random extension": _extension(_typed(random_pb2.Random())),
}
ACKED: dict[str, Edit] = {
    "ROUND_ROBIN": _enum(LbPolicy.ROUND_ROBIN),
    "round_robin in wrr_locality": _extension(_in_localities(round_robin_pb2.RoundRobin())),
}


@pytest.fixture
async def client(
    tmp_path: Path, backends, balancers, monkeypatch
) -> AsyncIterator[Callable[[], Awaitable[tuple[Balancer, XdsClientProcess]]]]:
    started: list[XdsClientProcess] = []

    async def start() -> tuple[Balancer, XdsClientProcess]:
        a, b = await backends("pod-a"), await backends("pod-b")
        balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
        assert balancer.xds_address is not None
        bootstrap = write_bootstrap(tmp_path / "bootstrap.json", balancer.xds_address, "probe")
        process = await XdsClientProcess.start("xds:///echo", bootstrap)
        started.append(process)
        await process.request(op="calls", n=10)
        return balancer, process

    # The switch grpc-go reads; set to show that grpcio has none.
    monkeypatch.setenv("GRPC_EXPERIMENTAL_ENABLE_LEAST_REQUEST", "true")
    yield start
    for process in started:
        await process.close()


async def _answer(balancer: Balancer, edit: Edit) -> str:
    """Publishes the cluster with `edit` applied; returns the client's NACK message, or ""
    when it ACKed."""
    server = balancer.xds
    assert isinstance(server, XdsServer)
    resources = build_resources(balancer.clusters.values())
    edit(resources[CLUSTER]["echo"])
    server.cache.set_snapshot(resources)
    version = server.snapshot().version(CLUSTER)
    (status,) = server.clients()

    def answered() -> bool:
        return status.types[CLUSTER].acked_version == version or CLUSTER in status.pending_nacks()

    await wait_for(answered, timeout_s=30, what=f"an ACK or NACK of CDS {version}")
    nack = status.pending_nacks().get(CLUSTER)
    return "" if nack is None else nack.message


@pytest.mark.parametrize("form", list(NACKED))
async def test_grpcio_refuses_least_request_and_random(form, client):
    balancer, process = await client()

    message = await _answer(balancer, NACKED[form])

    assert "policy" in message  # "LB policy is not supported" / "no supported … policy"
    still = await process.request(op="calls", n=20)  # the last good config (round robin)
    assert still["errors"] == {} and set(still["counts"]) == {"pod-a", "pod-b"}


@pytest.mark.parametrize("form", list(ACKED))
async def test_grpcio_takes_round_robin_in_either_form(form, client):
    balancer, process = await client()

    assert await _answer(balancer, ACKED[form]) == ""
    answer = await process.request(op="calls", n=20)
    assert answer["errors"] == {} and set(answer["counts"]) == {"pod-a", "pod-b"}
