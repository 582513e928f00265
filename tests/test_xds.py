"""Proxyless gRPC: real grpcio xDS clients (`xds:///echo`) balance from the balancer's ADS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from balancer.server import Balancer
from balancer.xds.resources import TYPES
from balancer.xds.server import XdsServer
from tests.support.balancing import config
from tests.support.waiting import wait_for
from tests.support.xds import XdsClientProcess, write_bootstrap

pytestmark = pytest.mark.timeout(120)

ClientFactory = Callable[[str], Awaitable[XdsClientProcess]]


def _xds(balancer: Balancer) -> XdsServer:
    assert balancer.xds is not None
    return balancer.xds


@pytest.fixture
async def xds_clients(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[XdsClientProcess]]]:
    started: list[XdsClientProcess] = []

    async def start(balancer: Balancer, node_id: str = "client-1") -> XdsClientProcess:
        assert balancer.xds_address is not None
        bootstrap = write_bootstrap(tmp_path / f"{node_id}.json", balancer.xds_address, node_id)
        client = await XdsClientProcess.start("xds:///echo", bootstrap)
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()


def _all_acked(server: XdsServer, node_id: str) -> bool:
    snapshot = server.snapshot()
    clients = [c for c in server.clients() if c.node_id == node_id]
    return bool(clients) and all(
        c.in_sync(snapshot) and set(c.types) == set(TYPES) for c in clients
    )


async def test_it_serves_resources_a_grpc_client_accepts(backends, balancers, xds_clients):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    client = await xds_clients(balancer)

    answer = await client.request(op="calls", n=40)

    assert answer["errors"] == {}
    assert sum(answer["counts"].values()) == 40
    assert set(answer["counts"]) == {"pod-a", "pod-b"}
    await wait_for(lambda: _all_acked(_xds(balancer), "client-1"), what="every type ACKed")
    (status,) = _xds(balancer).clients()
    assert status.pending_nacks() == {}


async def test_it_makes_shares_follow_weights(backends, balancers, xds_clients):
    pods = [await backends(name) for name in ("pod-a", "pod-b", "pod-c")]
    balancer = await balancers(config(pods, xds={"address": "127.0.0.1:0"}))
    cluster = balancer.clusters["echo"]
    for name, weight in (("pod-a", 100), ("pod-b", 200), ("pod-c", 500)):
        cluster.set_weight(name, weight)
    client = await xds_clients(balancer)
    await client.request(op="calls", n=20)
    await wait_for(lambda: _all_acked(_xds(balancer), "client-1"), what="weights ACKed")

    answer = await client.request(op="calls", n=4000)

    assert answer["errors"] == {}
    shares = {name: n / 4000 for name, n in answer["counts"].items()}
    expected = {"pod-a": 1 / 8, "pod-b": 2 / 8, "pod-c": 5 / 8}
    assert all(abs(shares[name] - share) < 0.03 for name, share in expected.items()), shares
