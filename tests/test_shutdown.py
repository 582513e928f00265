"""Graceful shutdown: stop accepting, let in-flight calls finish for the grace period."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from balancer.server import Balancer
from tests.support import backend as be
from tests.support.balancing import config
from tests.support.waiting import wait_for


async def _started(backend) -> Balancer:
    balancer = Balancer(config([backend]))
    await balancer.start()
    return balancer


async def test_it_lets_an_in_flight_call_finish_within_the_grace_period(backends):
    a = await backends("pod-a")
    balancer = await _started(a)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        slow = channel.unary_unary(be.UNARY)(b"x", metadata=[("x-delay-ms", "500")], timeout=10)
        await wait_for(lambda: a.in_flight == 1, what="call in flight")
        stopping = asyncio.create_task(balancer.stop(grace_s=5))
        assert await slow == b"x"
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(be.UNARY)(b"x", timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_it_cancels_calls_still_running_when_the_grace_period_ends(backends):
    a = await backends("pod-a")
    balancer = await _started(a)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        md = [("x-delay-ms", "20000")]
        stuck = channel.unary_unary(be.UNARY)(b"x", metadata=md, timeout=30)
        await wait_for(lambda: a.in_flight == 1, what="call in flight")
        await balancer.stop(grace_s=0.2)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stuck
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    await wait_for(lambda: a.cancelled == 1, what="the backend call cancelled too")
