"""HAProxy's figures in the admin snapshot: calls by code, bytes, latency, in flight."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.engines.haproxy.calls import LATENCY_SAMPLE
from tests.support import backend as be
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
HAPROXY = {"engine": "haproxy", "shutdown_grace_s": 1}


@pytest.fixture
async def setup(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a], admin={}, **HAPROXY))
    admin_channel = grpc.aio.insecure_channel(balancer.admin_address)
    proxy = grpc.aio.insecure_channel(balancer.listen_addresses[0])
    yield a, admin_pb2_grpc.AdminStub(admin_channel), proxy
    await admin_channel.close()
    await proxy.close()


async def _pod_a(admin: admin_pb2_grpc.AdminStub) -> admin_pb2.EndpointSnapshot:
    snapshot = await admin.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
    (cluster,) = snapshot.clusters
    (endpoint,) = cluster.endpoints
    return endpoint


async def test_it_counts_calls_bytes_and_latency_from_show_stat_and_the_logs(setup):
    a, admin, proxy = setup
    for _ in range(20):
        assert await proxy.unary_unary(be.UNARY)(b"x" * 100, timeout=10) == b"x" * 100
    # Cancelled by the client: HAProxy logs the abort. (A deadline the pod enforces itself
    # ends in trailers, which HAProxy 2.6 cannot log: that one would count as OK.)
    call = proxy.unary_unary(be.UNARY)(b"x", metadata=[("x-delay-ms", "3000")], timeout=30)
    await wait_for(lambda: a.in_flight == 1, 10, what="the call at the pod")
    call.cancel()
    latest: list[admin_pb2.EndpointSnapshot] = []

    async def counted() -> bool:
        latest[:] = [await _pod_a(admin)]
        return latest[0].requests_total == 21

    await _until(counted)
    endpoint = latest[0]
    assert dict(endpoint.requests_by_code) == {"OK": 20, "CANCELLED": 1}
    assert endpoint.bytes_received >= 20 * 100 and endpoint.bytes_sent >= 20 * 100
    # One call in LATENCY_SAMPLE is logged for latency, weighing LATENCY_SAMPLE calls:
    # the 1st, 11th and 21st of HAProxy's 21.
    assert sum(endpoint.latency.counts) == 3 * LATENCY_SAMPLE


async def test_it_reports_streams_in_flight_from_show_stat(setup):
    a, admin, proxy = setup
    slow = proxy.unary_unary(be.UNARY)(b"x", metadata=[("x-delay-ms", "4000")], timeout=30)
    await wait_for(lambda: a.in_flight == 1, 10, what="the slow call at the pod")

    async def one_in_flight() -> bool:
        return (await _pod_a(admin)).in_flight == 1

    await _until(one_in_flight)
    await slow

    async def none_in_flight() -> bool:
        return (await _pod_a(admin)).in_flight == 0

    await _until(none_in_flight)


async def _until(check, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)
