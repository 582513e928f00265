"""The collector against real balancers: snapshot streams in, frames out, replicas down and back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
import pytest

from balancer.admin.v1 import admin_pb2
from balancer.server import Balancer
from dashboard.collector.frames import PodFrame, ServiceFrame
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from demo.scene import SceneOptions, workload_spec
from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc
from platforms.base import PodFacts
from platforms.local import LocalPlatform
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.waiting import wait_for

SERVICE = "echo"
FAST_BACKOFF_S = (0.05, 0.1, 0.2)


@dataclass
class Sink:
    """A publish sink that keeps every frame; `fail` makes the next publishes raise."""

    frames: list[ServiceFrame] = field(default_factory=list)
    fail: int = 0

    async def __call__(self, frame: ServiceFrame) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("channel layer unreachable")
        self.frames.append(frame)

    def last(self) -> ServiceFrame | None:
        return self.frames[-1] if self.frames else None

    def replica_up(self, replica_id: str) -> bool | None:
        frame = self.last()
        if frame is None:
            return None
        return next(r["up"] for r in frame["replicas"] if r["id"] == replica_id)

    def rps(self, pod: str) -> float:
        frame = self.last()
        if frame is None:
            return 0.0
        return next((p["rps"] or 0.0 for p in frame["pods"] if p["pod"] == pod), 0.0)

    def pod(self, name: str) -> PodFrame | None:
        frame = self.last()
        if frame is None:
            return None
        return next((p for p in frame["pods"] if p["pod"] == name), None)


def collector_config(*replicas: tuple[str, str], **kwargs: object) -> CollectorConfig:
    return CollectorConfig(
        replicas=[ReplicaTarget(rid, address, ADMIN_TOKEN) for rid, address in replicas],
        services={SERVICE: ServiceTarget(cluster="echo", deployment="echo")},
        interval_s=0.25,
        backoff_s=FAST_BACKOFF_S,
        **kwargs,  # type: ignore[arg-type]
    )


def free_address() -> str:
    """A loopback address nothing listens on (yet): a replica that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
async def collectors() -> AsyncIterator[Callable[..., Awaitable[Collector]]]:
    started: list[Collector] = []

    async def start(cfg: CollectorConfig, publish: Sink, **kwargs: object) -> Collector:
        collector = Collector(cfg, publish, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]
        await collector.start()
        started.append(collector)
        return collector

    yield start
    for collector in started:
        await collector.stop()


@pytest.fixture
async def pods(backends: Callable[..., Awaitable[Backend]]) -> tuple[Backend, Backend]:
    return await backends("pod-a"), await backends("pod-b")


async def send_calls(balancer: Balancer, n: int) -> None:
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        for _ in range(n):
            await channel.unary_unary(be.UNARY)(b"ping", timeout=5)


async def test_it_publishes_per_pod_rates_after_traffic(
    pods: tuple[Backend, Backend],
    balancers: Callable[..., Awaitable[Balancer]],
    collectors: Callable[..., Awaitable[Collector]],
) -> None:
    balancer = await balancers(config(pods, admin={}))
    sink = Sink()
    collector = await collectors(collector_config(("b0", balancer.admin_address)), sink)
    await wait_for(lambda: sink.replica_up("b0"), what="the replica to be up")

    traffic = asyncio.create_task(send_calls(balancer, 10_000))
    try:
        await wait_for(
            lambda: sink.rps("pod-a") > 0 and sink.rps("pod-b") > 0, what="rates of both pods"
        )
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
    frame = sink.last()
    assert frame is not None
    assert {p["pod"] for p in frame["pods"]} == {"pod-a", "pod-b"}
    assert sink.rps("pod-a") > 0 and sink.rps("pod-b") > 0
    assert frame["totals"]["rps"] > 0
    assert frame["pods"][0]["state"] == "READY"
    assert frame["pods"][0]["phase"] is None  # no platform: no pod facts
    # Every published frame is in the history, already encoded.
    assert collector.history.count(SERVICE) >= len(sink.frames)
    assert json.loads(collector.history.latest(SERVICE, 1)[0]) == frame


async def test_it_reports_a_down_replica_and_keeps_sending_frames(
    pods: tuple[Backend, Backend],
    balancers: Callable[..., Awaitable[Balancer]],
    collectors: Callable[..., Awaitable[Collector]],
) -> None:
    balancer = await balancers(config(pods, admin={}))
    sink = Sink()
    replicas = [("up", balancer.admin_address), ("gone", free_address())]
    await collectors(collector_config(*replicas), sink)
    await wait_for(lambda: sink.replica_up("up"), what="the live replica to be up")
    seen = len(sink.frames)
    await wait_for(lambda: len(sink.frames) >= seen + 3, what="more frames")
    assert sink.replica_up("gone") is False
    assert sink.replica_up("up") is True


async def test_it_shows_a_replica_up_again_when_it_comes_back(
    pods: tuple[Backend, Backend], collectors: Callable[..., Awaitable[Collector]]
) -> None:
    address = free_address()
    sink = Sink()
    await collectors(collector_config(("late", address)), sink)
    await wait_for(lambda: len(sink.frames) >= 2, what="frames while the replica is down")
    assert sink.replica_up("late") is False

    balancer = Balancer(config(pods, admin={"address": address}))
    await balancer.start()
    try:
        await wait_for(lambda: sink.replica_up("late"), what="the replica to come up")
    finally:
        await balancer.stop(grace_s=0)
    await wait_for(lambda: sink.replica_up("late") is False, what="the replica to go down")

    again = Balancer(config(pods, admin={"address": address}))
    await again.start()
    try:
        await wait_for(lambda: sink.replica_up("late"), what="the replica to come back")
    finally:
        await again.stop(grace_s=0)


async def test_it_survives_a_failing_publish(
    pods: tuple[Backend, Backend],
    balancers: Callable[..., Awaitable[Balancer]],
    collectors: Callable[..., Awaitable[Collector]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    balancer = await balancers(config(pods, admin={}))
    sink = Sink(fail=3)
    with caplog.at_level(logging.WARNING, logger="dashboard.collector.runner"):
        collector = await collectors(collector_config(("b0", balancer.admin_address)), sink)
        await wait_for(lambda: len(sink.frames) >= 2, what="frames after the failures")
    assert sink.fail == 0
    # The frames that could not be sent are still kept for a page's first paint.
    assert collector.history.count(SERVICE) >= len(sink.frames) + 3
    # Three failures in a row (a channel layer away) are one line, not a traceback each,
    # and one more says when it works again.
    publishing = [r for r in caplog.records if "publishing" in r.getMessage()]
    assert [r.getMessage().split(" (")[0] for r in publishing] == [
        f"publishing the frame of {SERVICE} failed",
        "publishing frames works again",
    ]
    assert not any(r.exc_info for r in publishing)


class Pods:
    """A platform that knows one deployment's pods; its first list_pods call fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def list_pods(self, deployment: str) -> list[PodFacts]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("platform unreachable")
        return [
            PodFacts(name, deployment, None, "Running", True, 0, None, memory_bytes=1 << 20)
            for name in ("pod-a", "pod-b", "pod-c")
        ]


async def test_it_joins_pod_facts_and_retries_a_failing_platform(
    pods: tuple[Backend, Backend],
    balancers: Callable[..., Awaitable[Balancer]],
    collectors: Callable[..., Awaitable[Collector]],
) -> None:
    balancer = await balancers(config(pods, admin={}))
    sink = Sink()
    platform = Pods()
    cfg = collector_config(("b0", balancer.admin_address), pods_interval_s=0.25)
    await collectors(cfg, sink, platform=platform)

    def facts_joined() -> bool:
        frame = sink.last()
        return frame is not None and len(frame["pods"]) == 3 and sink.replica_up("b0") is True

    await wait_for(facts_joined, what="pod facts in a frame")
    frame = sink.last()
    assert frame is not None
    by_pod = {p["pod"]: p for p in frame["pods"]}
    assert by_pod["pod-a"]["phase"] == "Running" and by_pod["pod-a"]["mem"] == 1 << 20
    assert by_pod["pod-c"]["state"] is None  # a pod the balancer does not route to
    assert platform.calls >= 2
    assert frame["usage_note"] is None  # the local platform's figures are all there


async def test_it_says_in_the_frame_why_the_platform_has_no_cpu_or_memory() -> None:
    class NoMetrics(Pods):
        usage_note = "CPU and memory are missing: metrics-server is not installed"

    sink = Sink()
    collector = Collector(collector_config(("b0", free_address())), sink, platform=NoMetrics())
    await collector.tick()
    (frame,) = sink.frames
    assert frame["usage_note"] == NoMetrics.usage_note


async def test_it_stamps_frames_with_the_injected_clock() -> None:
    sink = Sink()
    collector = Collector(collector_config(("b0", free_address())), sink, clock=lambda: 1.7e9 + 0.5)
    await collector.tick()
    (frame,) = sink.frames
    assert frame["t"] == 1_700_000_000_500
    assert frame["replicas"] == [{"id": "b0", "up": False, "converged": None}]
    assert frame["pods"] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_s": 0.1}, "interval_s must be at least 0.25 s"),
        ({"backoff_s": ()}, "backoff_s must be one or more positive delays"),
        ({"history_window_s": 0.1}, "history_window_s must hold at least one interval"),
    ],
)
def test_it_rejects_an_invalid_config(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"replicas": [], "services": {}}
    with pytest.raises(ValueError, match=message):
        CollectorConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_it_rejects_duplicate_replica_ids_and_missing_tokens() -> None:
    twice = [ReplicaTarget("b0", "127.0.0.1:1", "t"), ReplicaTarget("b0", "127.0.0.1:2", "t")]
    with pytest.raises(ValueError, match="unique: b0"):
        CollectorConfig(replicas=twice, services={})
    with pytest.raises(ValueError, match="needs a token"):
        ReplicaTarget("b0", "127.0.0.1:1", "")


def test_it_sizes_the_history_for_fifteen_minutes_by_default() -> None:
    cfg = CollectorConfig(replicas=[], services={})
    assert cfg.history_capacity == 900
    assert CollectorConfig(replicas=[], services={}, interval_s=0.25).history_capacity == 3600


# ---- the rates pods report themselves, from a real demo workload pod -------------------

# Pods start slowly on a loaded machine; the deadline is generous, the waits are not.
SLOW_S = 30.0


@pytest.fixture
async def workload_pod(tmp_path: Path) -> AsyncIterator[tuple[LocalPlatform, PodFacts]]:
    """One `python -m demo.workload` pod on the local platform, failing half its Inventory calls.

    The failures show that the figures are its clients' calls (readiness probes, which
    never fail, are left out of the rates anyway).
    """
    knobs = {"BALLAST_KNOB_ERROR_RATE": "0.5", "BALLAST_KNOB_ERROR_CODE": "UNAVAILABLE"}
    spec = workload_spec(SceneOptions(pods=1, knobs=knobs))  # the demo's own deployment
    platform = LocalPlatform([spec], rng=random.Random(7), log_dir=tmp_path)
    await platform.start()
    try:
        await platform.wait_ready(spec.name, SLOW_S)
        (pod,) = await platform.list_pods(spec.name)
        yield platform, pod
    finally:
        await platform.stop()


async def call_directly(address: str) -> None:
    """Calls the pod itself in a loop, as a client that bypasses Ballast does."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InventoryStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):  # the injected failures
                await stub.GetItem(pb.GetItemRequest(id="a"), timeout=5)


async def test_it_shows_the_traffic_a_pod_reports_that_bypasses_the_balancer(
    pods: tuple[Backend, Backend],
    balancers: Callable[..., Awaitable[Balancer]],
    collectors: Callable[..., Awaitable[Collector]],
    workload_pod: tuple[LocalPlatform, PodFacts],
) -> None:
    platform, pod = workload_pod
    assert pod.address is not None and pod.metrics_address is not None
    balancer = await balancers(config(pods, admin={}))  # routes to pod-a and pod-b only
    sink = Sink()
    cfg = CollectorConfig(
        replicas=[ReplicaTarget("b0", balancer.admin_address, ADMIN_TOKEN)],
        services={SERVICE: ServiceTarget(cluster="echo", deployment=pod.deployment)},
        interval_s=0.25,
        pods_interval_s=0.25,
        backoff_s=FAST_BACKOFF_S,
    )
    await collectors(cfg, sink, platform=platform)

    def reported() -> bool:
        row = sink.pod(pod.name)
        if row is None or not sink.replica_up("b0"):
            return False
        return (row["pod_rps"] or 0) > 0 and (row["pod_err_s"] or 0) > 0

    traffic = asyncio.create_task(call_directly(pod.address))
    try:
        await wait_for(reported, timeout_s=SLOW_S, what="the pod's own rates in a frame")
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
    row = sink.pod(pod.name)
    assert row is not None
    assert row["rps"] is None and row["state"] is None  # the balancer never saw these calls
    assert row["phase"] == "Running" and row["started"] is not None
    frame = sink.last()
    assert frame is not None
    assert frame["totals"]["pod_rps"] == row["pod_rps"]  # the only pod that reports


async def test_it_adds_up_the_xds_clients_of_the_replicas_that_are_up() -> None:
    """Each proxyless client follows one replica's xDS server: the frame shows them all."""

    def snapshot(clients: int, in_sync: int) -> admin_pb2.Snapshot:
        cluster = admin_pb2.ClusterSnapshot(
            name="echo", xds_clients=clients, xds_clients_in_sync=in_sync
        )
        return admin_pb2.Snapshot(taken_at_unix_ms=1, clusters=[cluster])

    sink = Sink()
    collector = Collector(
        collector_config(("b0", free_address()), ("b1", free_address())), sink, clock=lambda: 1.7e9
    )
    collector._replicas["b0"].observe(snapshot(3, 3))
    collector._replicas["b1"].observe(snapshot(2, 1))
    await collector.tick()
    assert sink.frames[-1]["xds"] == {"clients": 5, "in_sync": 4, "fallback": False}
    collector._replicas["b1"].mark_down()
    await collector.tick()
    assert sink.frames[-1]["xds"] == {"clients": 3, "in_sync": 3, "fallback": False}
