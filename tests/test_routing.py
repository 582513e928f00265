"""Routes from service or prefix to clusters; unary methods learned by reflection."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import grpc.aio
import pytest

from balancer.config import config_from_dict
from tests.support import backend as be
from tests.support.balancing import config
from tests.support.waiting import wait_for


def _two_clusters(a, b, **routing):
    return config_from_dict(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [
                {
                    "name": "alpha",
                    "discovery": {"endpoints": [{"address": a.address, "name": "a"}]},
                },
                {"name": "beta", "discovery": {"endpoints": [{"address": b.address, "name": "b"}]}},
            ],
            "routing": routing,
        },
        environ={},
    )


async def _backend_of(channel, method=be.UNARY):
    call = channel.unary_unary(method)(b"x", timeout=5)
    await call
    return dict(await call.initial_metadata())["x-backend"]


@pytest.mark.parametrize(
    "route", [{"service": "test.Echo", "cluster": "beta"}, {"prefix": "/test.", "cluster": "beta"}]
)
async def test_it_routes_by_service_or_prefix(backends, balancers, route):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(_two_clusters(a, b, default_cluster="alpha", routes=[route]))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await _backend_of(channel) == "pod-b"


async def test_it_sends_unmatched_methods_to_the_default_cluster(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    routes = [{"service": "other.Service", "cluster": "beta"}]
    balancer = await balancers(_two_clusters(a, b, default_cluster="alpha", routes=routes))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await _backend_of(channel) == "pod-a"


async def test_it_answers_unimplemented_with_the_reason_when_nothing_matches(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    routes = [{"service": "other.Service", "cluster": "beta"}]
    balancer = await balancers(_two_clusters(a, b, routes=routes))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(be.UNARY)(b"x", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == (
        "ballast: no route for /test.Echo/Unary and no default cluster; add a route for it"
    )


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def test_it_learns_unary_methods_from_server_reflection(backends, balancers):
    a = await backends("pod-a", with_reflection=True)
    balancer = await balancers(config([a]))
    cluster = balancer.clusters["echo"]
    await wait_for(lambda: be.UNARY in cluster.unary_methods, what="unary methods learned")
    assert cluster.unary_methods == {be.UNARY}
    assert balancer.engine.proxy.service(_Details(be.UNARY)).unary_unary is not None
    assert balancer.engine.proxy.service(_Details(be.BIDI)).stream_stream is not None
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await _backend_of(channel) == "pod-a"


async def test_it_streams_every_method_when_the_backend_has_no_reflection(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a]))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await _backend_of(channel) == "pod-a"
    assert balancer.clusters["echo"].unary_methods == set()
    assert balancer.engine.proxy.service(_Details(be.UNARY)).stream_stream is not None


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "peak_ewma", "random"])
async def test_it_splits_real_traffic_by_weight(backends, balancers, policy):
    pods = [await backends(f"pod-{i}") for i in range(2)]
    cluster = {"policy": policy, "unary_methods": [be.UNARY]}
    balancer = await balancers(config(pods, cluster=cluster), rng=__import__("random").Random(7))
    balancer.clusters["echo"].set_weight("pod-1", 300)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        served = Counter()
        for _ in range(200):  # four calls at a time: load, but no pile-up in one process
            served.update(await asyncio.gather(*(_backend_of(channel) for _ in range(4))))
    # Expected 200 : 600. Round robin is exact up to its start offset; the sampled
    # policies (binomial, σ ≈ 12) get a 4σ band so a seeded run cannot flake.
    tolerance = 2 if policy == "round_robin" else 50
    assert abs(served["pod-0"] - 200) <= tolerance, served
