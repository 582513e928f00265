"""Drain: no new requests from the moment it is acknowledged; in-flight calls finish."""

from __future__ import annotations

from collections import Counter

import grpc
import grpc.aio
import pytest

from balancer.endpoint import State
from tests.support import backend as be
from tests.support.balancing import config
from tests.support.waiting import wait_for


@pytest.fixture
async def pair(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], cluster={"policy": "round_robin"}))
    channel = grpc.aio.insecure_channel(balancer.listen_addresses[0])
    yield a, b, balancer, channel
    await channel.close()


def _long_stream(channel, messages=10, delay_ms=100):
    md = [("x-count", str(messages)), ("x-delay-ms", str(delay_ms))]
    return channel.unary_stream(be.SERVER_STREAM)(b"s", metadata=md, timeout=30)


async def _served_by(channel, n):
    served = Counter()
    for _ in range(n):
        call = channel.unary_unary(be.UNARY)(b"x", timeout=5)
        await call
        served[dict(await call.initial_metadata())["x-backend"]] += 1
    return served


async def test_it_lets_long_streams_finish_and_sends_new_requests_elsewhere(pair):
    a, b, balancer, channel = pair
    cluster = balancer.clusters["echo"]
    streams = [_long_stream(channel) for _ in range(20)]
    await wait_for(lambda: a.in_flight + b.in_flight == 20, what="20 streams open")
    assert a.in_flight == 10  # round robin split them evenly
    calls_before = a.calls

    drained = cluster.drain("pod-a")
    assert drained.state is State.DRAINING
    assert await _served_by(channel, 20) == Counter({"pod-b": 20})
    assert a.calls == calls_before  # not one new request reached the drained pod

    results = [[m async for m in call] for call in streams]
    assert all(len(messages) == 10 for messages in results)
    assert [await call.code() for call in streams] == [grpc.StatusCode.OK] * 20
    await wait_for(lambda: cluster.endpoints["pod-a"].state is State.DRAINED, what="DRAINED")

    cluster.undrain("pod-a")
    assert cluster.endpoints["pod-a"].state is State.READY
    assert (await _served_by(channel, 20))["pod-a"] == 10


async def test_it_is_drained_at_once_when_idle_and_draining_twice_is_harmless(pair):
    _, _, balancer, _ = pair
    cluster = balancer.clusters["echo"]
    assert cluster.drain("pod-a").state is State.DRAINED
    assert cluster.drain("pod-a").state is State.DRAINED


async def test_it_cancels_what_is_left_when_the_drain_timeout_elapses(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a]))
    cluster = balancer.clusters["echo"]
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        streams = [_long_stream(channel, messages=100, delay_ms=100) for _ in range(2)]
        await wait_for(lambda: a.in_flight == 2, what="2 streams on pod-a")
        cluster.drain("pod-a", timeout_s=0.3)
        errors = []
        for call in streams:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                _ = [m async for m in call]
            errors.append((caught.value.code(), caught.value.details()))
    why = "ballast: endpoint pod-a was drained and its drain timeout elapsed; retry the call"
    assert errors == [(grpc.StatusCode.UNAVAILABLE, why)] * 2
    await wait_for(lambda: cluster.endpoints["pod-a"].state is State.DRAINED, what="DRAINED")
    await wait_for(lambda: a.cancelled == 2, what="the backend saw its calls cancelled")


async def test_it_says_why_when_every_endpoint_is_drained(pair):
    _, _, balancer, channel = pair
    cluster = balancer.clusters["echo"]
    cluster.drain("pod-a")
    cluster.drain("pod-b")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(be.UNARY)(b"x", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == (
        "ballast: cluster 'echo' has no READY endpoint: all 2 are DRAINED"
    )


async def test_it_finishes_a_removed_endpoints_streams_before_forgetting_it(pair):
    from balancer.discovery import Remove

    a, _, balancer, channel = pair
    cluster = balancer.clusters["echo"]
    streams = [_long_stream(channel, messages=5, delay_ms=50) for _ in range(2)]
    await wait_for(lambda: a.in_flight == 1, what="one stream on pod-a")
    cluster.apply(Remove(("pod-a",)))
    assert cluster.endpoints["pod-a"].state is State.DRAINING
    assert [len([m async for m in call]) for call in streams] == [5, 5]
    await wait_for(lambda: "pod-a" not in cluster.endpoints, what="pod-a forgotten")
