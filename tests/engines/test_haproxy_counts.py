"""Calls counted under HAProxy without a log line per call, and its connections to pods.

OK calls come from `show stat` (counts.py), errors from HAProxy's error log one by
one; outlier detection hears of both at each read. Pods here answer errors
trailers-only (before any header), the only errors HAProxy 2.6 can see.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import grpc
import grpc.aio
import psutil
import pytest

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import HaproxyConfig
from balancer.engines.haproxy.counts import ServedCounts
from balancer.engines.haproxy.runtime import ServerStat
from tests.support import backend as be
from tests.support.balancing import ADMIN_TOKEN, config

pytestmark = pytest.mark.timeout(180)

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
HAPROXY = {"engine": "haproxy", "shutdown_grace_s": 1}
OUTLIERS = {"outlier_detection": {"consecutive_failures": 5, "max_ejection_percent": 100}}


class FailingPod:
    """A gRPC server whose unary calls fail with UNAVAILABLE, trailers-only, every
    `every`-th call (1: all of them); the others echo."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.calls = itertools.count(1)
        self.failed = 0
        self.server = grpc.aio.server()
        self.address = ""

    async def start(self) -> FailingPod:
        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(self._unary)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        await self.server.start()
        return self

    async def _unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if next(self.calls) % self.every == 0:
            self.failed += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
        return request


@pytest.fixture
async def failing_pods() -> AsyncIterator[Callable[[int], Awaitable[FailingPod]]]:
    pods: list[FailingPod] = []

    async def start(every: int) -> FailingPod:
        pods.append(await FailingPod(every).start())
        return pods[-1]

    yield start
    for pod in pods:
        await pod.server.stop(0)


def _endpoints(pods: list[tuple[str, str]]) -> dict[str, object]:
    return {"discovery": {"endpoints": [{"address": a, "name": n} for n, a in pods]}}


async def _endpoint(admin: admin_pb2_grpc.AdminStub, name: str) -> admin_pb2.EndpointSnapshot:
    snapshot = await admin.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
    (cluster,) = snapshot.clusters
    return next(e for e in cluster.endpoints if e.endpoint_id == name)


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def _call_many(target: str, method: str, calls: int, concurrency: int) -> list[str]:
    """`calls` unary calls, `concurrency` at a time; the codes the clients got."""
    codes: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = channel.unary_unary(method)
        left = itertools.count()

        async def worker() -> None:
            while next(left) < calls:
                try:
                    await stub(b"x" * 64, timeout=30)
                    codes.append("OK")
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code().name)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes


async def test_it_counts_every_call_of_a_burst(backends, balancers):
    # A line per call overflowed the log socket's queue (10 datagrams) under load: calls
    # went uncounted. OK calls now come from show stat, exactly.
    pod = await backends("pod-a")
    balancer = await balancers(config([pod], admin={}, **HAPROXY))
    admin = admin_pb2_grpc.AdminStub(grpc.aio.insecure_channel(balancer.admin_address))
    codes = await _call_many(balancer.listen_addresses[0], be.UNARY, 3000, 64)
    assert codes.count("OK") == 3000

    async def all_counted() -> bool:
        return (await _endpoint(admin, "pod-a")).requests_total >= 3000

    await _until(all_counted)
    endpoint = await _endpoint(admin, "pod-a")
    assert dict(endpoint.requests_by_code) == {"OK": 3000}
    assert endpoint.bytes_received >= 3000 * 64 and endpoint.bytes_sent >= 3000 * 64


async def test_it_counts_every_error_of_a_burst(balancers, failing_pods):
    # An error whose log line is lost would count as OK: the error log goes through a ring.
    pod = await failing_pods(1)
    cluster = {**_endpoints([("bad", pod.address)]), "outlier_detection": {"enabled": False}}
    balancer = await balancers(config([], cluster=cluster, admin={}, **HAPROXY))
    admin = admin_pb2_grpc.AdminStub(grpc.aio.insecure_channel(balancer.admin_address))
    codes = await _call_many(balancer.listen_addresses[0], "/test.Echo/Unary", 3000, 64)
    assert codes.count("UNAVAILABLE") == 3000

    async def all_counted() -> bool:
        return (await _endpoint(admin, "bad")).requests_total >= 3000

    await _until(all_counted)
    assert dict((await _endpoint(admin, "bad")).requests_by_code) == {"UNAVAILABLE": 3000}


async def test_it_counts_a_pod_s_errors_and_ejects_it_when_it_fails_every_call(
    backends, balancers, failing_pods
):
    good, bad = await backends("good"), await failing_pods(1)
    pods = [("good", good.address), ("bad", bad.address)]
    cluster = {**_endpoints(pods), **OUTLIERS}
    balancer = await balancers(config([], cluster=cluster, admin={}, **HAPROXY))
    admin = admin_pb2_grpc.AdminStub(grpc.aio.insecure_channel(balancer.admin_address))
    target, codes = balancer.listen_addresses[0], []

    async def ejected() -> bool:
        codes.extend(await _call_many(target, "/test.Echo/Unary", 20, 4))
        return (await _endpoint(admin, "bad")).state == admin_pb2.ENDPOINT_STATE_EJECTED

    await _until(ejected)
    assert codes.count("UNAVAILABLE") == bad.failed >= 5

    async def errors_counted() -> bool:
        by_code = dict((await _endpoint(admin, "bad")).requests_by_code)
        return by_code.get("UNAVAILABLE") == bad.failed

    await _until(errors_counted)
    assert dict((await _endpoint(admin, "bad")).requests_by_code) == {"UNAVAILABLE": bad.failed}


async def test_it_keeps_a_pod_whose_failures_ok_calls_break_up(balancers, failing_pods):
    # Every other call fails: never 5 in a row, so never ejected, although OK calls are
    # counted per second and errors one by one.
    pod = await failing_pods(2)
    cluster = {**_endpoints([("flaky", pod.address)]), **OUTLIERS}
    balancer = await balancers(config([], cluster=cluster, admin={}, **HAPROXY))
    admin = admin_pb2_grpc.AdminStub(grpc.aio.insecure_channel(balancer.admin_address))
    codes = await _call_many(balancer.listen_addresses[0], "/test.Echo/Unary", 400, 1)
    assert codes.count("UNAVAILABLE") == 200

    async def all_counted() -> bool:
        return (await _endpoint(admin, "flaky")).requests_total >= 400

    await _until(all_counted)
    endpoint = await _endpoint(admin, "flaky")
    assert dict(endpoint.requests_by_code) == {"OK": 200, "UNAVAILABLE": 200}
    assert endpoint.state == admin_pb2.ENDPOINT_STATE_READY


async def test_it_carries_bursts_of_calls_on_one_connection_per_pod(backends, balancers):
    # With HAProxy's default connection reuse every burst of new streams opened
    # connections of its own, and they piled up (fewer calls per read at each pod).
    pods = [await backends("pod-a"), await backends("pod-b")]
    one_thread = replace(config(pods, **HAPROXY), haproxy=HaproxyConfig(threads=1))
    balancer = await balancers(one_thread)
    for _ in range(5):
        await _call_many(balancer.listen_addresses[0], be.UNARY, 128, 64)
    pid = balancer.engine.pid
    assert pid is not None
    ports = {int(pod.address.rpartition(":")[2]) for pod in pods}
    to_pods = [
        c
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    ]
    assert sorted(c.raddr.port for c in to_pods) == sorted(ports)


def _stat(total: int, now: int = 0, redispatched: int = 0, bytes_in: int = 0) -> ServerStat:
    return ServerStat(
        backend="c0_echo", server="s1", sessions_now=now, sessions_total=total,
        bytes_in=bytes_in, bytes_out=0, status="UP", redispatched=redispatched,
    )  # fmt: skip


def test_it_counts_ok_calls_one_read_late_so_late_error_lines_are_not_counted_ok():
    counts = ServedCounts()
    assert counts.update(_stat(total=10, now=2)).ok_calls == 0  # 8 ended: counted next read
    counts.not_ok("c0_echo", "s1")  # one of those 8 failed; its line came after the read
    second = counts.update(_stat(total=12, now=0))
    assert (second.ok_calls, second.ok_in_period) == (7, 3)  # 8 − 1; 12 ended − 8 − 1 error
    assert counts.update(_stat(total=12)).ok_calls == 4
    assert counts.update(_stat(total=12)).ok_calls == 0


def test_it_leaves_out_calls_redispatched_elsewhere_and_counts_a_deleted_server_fully():
    counts = ServedCounts()
    counts.update(_stat(total=10, redispatched=4, bytes_in=100))
    final = counts.update(_stat(total=12, redispatched=4, bytes_in=150), final=True)
    assert (final.ok_calls, final.bytes_in) == (8, 50)


def test_it_starts_again_from_zero_for_a_new_haproxy_process():
    counts = ServedCounts()
    counts.update(_stat(total=100))
    counts.update(_stat(total=100))
    counts.reset()
    counts.update(_stat(total=3, bytes_in=30))
    again = counts.update(_stat(total=3))
    assert again.ok_calls == 3
