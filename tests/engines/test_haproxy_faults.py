"""HAProxy under change and under faults: discovery under load, HAProxy killed with -9."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from balancer.admin.snapshot import Reader
from balancer.config import ClusterConfig
from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address, State
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

HAPROXY = {"engine": "haproxy", "shutdown_grace_s": 1}
HEALTH = {"health_check": {"enabled": True, "interval_s": 0.2}}


class QueueDiscovery:
    """Discovery a test drives: every update put in `updates` is applied in order."""

    def __init__(self, first: Update) -> None:
        self.updates: asyncio.Queue[Update] = asyncio.Queue()
        self.updates.put_nowait(first)

    def __call__(self, cluster: ClusterConfig) -> QueueDiscovery:
        return self

    async def watch(self) -> AsyncIterator[Update]:
        while True:
            yield await self.updates.get()


def _address(backend: Backend) -> Address:
    return Address("127.0.0.1", backend.port, pod_name=backend.name)


class Load:
    """Clients calling in a loop: unary calls and server streams; failures kept by code."""

    def __init__(self, target: str, clients: int = 4) -> None:
        self._channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
        self.served: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._tasks = [
            asyncio.ensure_future(self._run(i, ch)) for i, ch in enumerate(self._channels)
        ]

    async def _run(self, i: int, channel: grpc.aio.Channel) -> None:
        while True:
            try:
                if i % 2:
                    call = channel.unary_unary(be.UNARY)(
                        b"x", metadata=[("x-delay-ms", "5")], timeout=30
                    )
                    await call
                else:
                    call = channel.unary_stream(be.SERVER_STREAM)(
                        b"x", metadata=[("x-delay-ms", "5")], timeout=30
                    )
                    assert len([m async for m in call]) == 3
                self.served[dict(await call.initial_metadata())["x-backend"]] += 1
            except grpc.aio.AioRpcError as err:
                self.errors[err.code().name] += 1
                await asyncio.sleep(0.01)  # a failed connect is instant: don't spin

    @property
    def total(self) -> int:
        return sum(self.served.values())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()


async def test_it_follows_discovery_under_load_without_a_client_error(backends, balancers):
    a, b, c = [await backends(n) for n in ("pod-a", "pod-b", "pod-c")]
    discovery = QueueDiscovery(Reset((_address(a),)))
    balancer = await balancers(config([a], cluster=HEALTH, **HAPROXY), discovery=discovery)
    cluster = balancer.clusters["echo"]
    # Until its first health check passes a pod is PENDING: no engine routes to it.
    await wait_for(lambda: cluster.endpoints["pod-a"].state is State.READY, 20, what="pod-a up")
    load = Load(balancer.listen_addresses[0])
    try:
        await wait_for(lambda: load.served["pod-a"] >= 20, 20, what="load on pod-a")
        discovery.updates.put_nowait(Add((_address(b), _address(c))))
        await wait_for(lambda: load.served["pod-b"] >= 20 and load.served["pod-c"] >= 20, 20,
                       what="pods b and c taking calls")  # fmt: skip
        discovery.updates.put_nowait(Remove(("pod-a",)))
        await wait_for(lambda: "pod-a" not in cluster.endpoints, 20, what="pod-a drained, gone")
        a_calls = a.calls
        discovery.updates.put_nowait(Remove(("pod-b",)))
        await wait_for(lambda: "pod-b" not in cluster.endpoints, 20, what="pod-b drained, gone")
        mark = load.served["pod-c"]
        await wait_for(lambda: load.served["pod-c"] >= mark + 50, 20, what="calls on pod-c only")
    finally:
        await load.stop()
    print(f"\ndiscovery under load: served {dict(load.served)}, errors {dict(load.errors)}")
    assert load.errors == Counter(), load.errors
    assert a.calls == a_calls  # no call reached a removed pod
    assert load.total > 100


async def test_it_restarts_a_killed_haproxy_with_the_current_state(backends, balancers, caplog):
    caplog.set_level(logging.INFO)
    a, b, c = [await backends(n) for n in ("pod-a", "pod-b", "pod-c")]
    balancer = await balancers(config([a, b, c], cluster=HEALTH, **HAPROXY))
    cluster = balancer.clusters["echo"]
    await wait_for(lambda: all(ep.state is State.READY for ep in cluster.endpoints.values()), 20)
    cluster.set_weight("pod-b", 0)
    cluster.drain("pod-c")
    await wait_for(lambda: cluster.endpoints["pod-c"].state is State.DRAINED, 20, what="drained")
    pid = balancer.engine.pid
    assert pid is not None
    load = Load(balancer.listen_addresses[0])
    try:
        await wait_for(lambda: load.total >= 20, 20, what="load running")
        killed_at = asyncio.get_running_loop().time()
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: balancer.engine.pid not in (None, pid), 20, what="a new haproxy")
        await wait_for(lambda: balancer.engine.figures().up, 20, what="the engine up again")
        down_s = asyncio.get_running_loop().time() - killed_at
        mark = load.total
        await wait_for(lambda: load.total >= mark + 20, 20, what="load through the new haproxy")
    finally:
        await load.stop()
    print(f"\nhaproxy killed: down {down_s:.2f} s, served {load.total}, errors {dict(load.errors)}")
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        served = Counter()
        for _ in range(30):
            call = channel.unary_unary(be.UNARY)(b"x", timeout=10)
            await call
            served[dict(await call.initial_metadata())["x-backend"]] += 1
    assert served == Counter({"pod-a": 30})  # pod-b's weight 0 and pod-c's drain held
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        f"haproxy (pid {pid}) exited with code" in m and "engine is down" in m for m in messages
    )
    assert any("haproxy restarted: the engine is up again" in m for m in messages)


async def test_it_reports_the_engine_down_until_haproxy_is_back(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a], admin={"metrics_address": "127.0.0.1:0"}, **HAPROXY))
    reader = Reader(balancer)
    assert 'ballast_engine_up{engine="haproxy"} 1.0' in await _metrics(balancer.metrics_address)
    pid = balancer.engine.pid
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: not reader.balancer().engine_up, 10, what="the engine reported down")
    await wait_for(lambda: reader.balancer().engine_up, 20, what="the engine reported up again")
    assert balancer.engine.pid != pid


async def _metrics(address: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return response.read().decode()

    return await asyncio.to_thread(get)


async def test_stop_stops_haproxy_even_when_a_task_does_not_end_when_cancelled(
    backends, balancers, caplog
):
    # Python 3.11's wait_for can lose a cancel that lands as its inner call completes; a
    # task of the engine that lost it once must not keep stop waiting, nor HAProxy running.
    a = await backends("pod-a")
    balancer = await balancers(config([a], **HAPROXY))
    engine = balancer.engine
    pid = engine.pid
    assert pid is not None

    async def loses_one_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # as if the cancel had been lost

    engine._spawn(loses_one_cancel())
    await asyncio.wait_for(balancer.stop(grace_s=0), 30)
    assert not _alive(pid), "haproxy outlived the engine"
    assert any("did not stop when cancelled" in r.getMessage() for r in caplog.records)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
