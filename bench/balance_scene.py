"""What the balance scenarios do to a running `Scene`: start and stop it, look at its pods and
endpoints, turn a pod's knobs, hold server streams open through the balancer."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import psutil

from balancer.cluster import Cluster
from balancer.endpoint import Endpoint
from demo.loadgen import LoadGenerator, LoadStats
from demo.scene import SERVICE, Scene, SceneOptions
from demo.v1 import workload_pb2 as pb
from demo.workload.knobs import set_knobs

POLL_S = 0.005
STARTED_S = time.monotonic()


def say(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - STARTED_S:6.1f} s] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def running_scene(options: SceneOptions) -> AsyncIterator[Scene]:
    """A started scene (pods ready, both client groups calling), stopped on the way out."""
    scene = Scene(options)
    await scene.start()
    try:
        yield scene
    finally:
        await scene.stop()
        stop_stray_haproxy()


def haproxy_processes(scene: Scene) -> dict[str, int]:
    """Under HAProxy, how many haproxy processes of ours are running now (1 is right; more
    while a replaced one finishes its calls, or when the engine lost track of one): its
    `haproxy_processes` key, else nothing."""
    if scene.balancer.engine.name != "haproxy":
        return {}
    running = [c for c in psutil.Process().children() if c.name() == "haproxy"]
    return {"haproxy_processes": len(running)}


# HAProxy processes the HAProxy engine left running after its balancer stopped, per scene.
STRAY_HAPROXY: list[int] = []


def stop_stray_haproxy() -> None:
    """Kills haproxy children of this process still running after the scene stopped, and
    counts them in STRAY_HAPROXY: a policy change whose old process exits before the new
    one is ready makes the engine restart HAProxy beside the new one, which it then loses.
    Without this, `asyncio.run` would wait for them forever (their exit is waited on in
    threads)."""
    stray = [
        child
        for child in psutil.Process().children()
        if child.name() == "haproxy" and child.is_running()
    ]
    for child in stray:
        say(f"stray haproxy (pid {child.pid}) left by the engine after the scene stopped: killed")
        child.kill()
    STRAY_HAPROXY.append(len(stray))


def cluster_of(scene: Scene) -> Cluster:
    return scene.balancer.clusters[SERVICE]


def loads(scene: Scene) -> tuple[LoadGenerator, LoadGenerator]:
    """The scene's client groups: (via L4, via Ballast)."""
    assert scene.via_l4 is not None and scene.via_ballast is not None, "scene not started"
    return scene.via_l4, scene.via_ballast


async def running_pods(scene: Scene) -> dict[str, str]:
    """Name → gRPC address of the deployment's running pods, oldest first."""
    pods = await scene.platform.list_pods(SERVICE)
    return {p.name: p.address for p in pods if p.phase == "Running" and p.address}


async def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Polls `predicate` every few ms; True once it holds, False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


def picked(ep: Endpoint) -> int:
    """Calls the balancer has sent to `ep` so far: every call is in flight, or finished and
    counted in the endpoint's stats (the proxy records each one as it ends)."""
    return ep.stats.total_requests + ep.in_flight


def upstream_tally(cluster: Cluster) -> dict[str, tuple[int, float]]:
    """Per endpoint: calls ended so far and their summed latency as the balancer timed them."""
    return {
        name: (ep.stats.total_requests, ep.stats.latency_sum_s)
        for name, ep in cluster.endpoints.items()
    }


def upstream_load(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]],
    pods: list[str], elapsed_s: float,
) -> dict[str, list[float | None]]:  # fmt: skip
    """Between two tallies, per pod: mean upstream latency and, by Little's law, the mean
    number of calls in flight (calls/s × mean latency): the load the pickers see."""
    mean_ms: list[float | None] = []
    in_flight: list[float | None] = []
    for pod in pods:
        calls = after.get(pod, (0, 0.0))[0] - before.get(pod, (0, 0.0))[0]
        busy_s = after.get(pod, (0, 0.0))[1] - before.get(pod, (0, 0.0))[1]
        mean_ms.append(round(busy_s / calls * 1000, 2) if calls else None)
        in_flight.append(round(busy_s / elapsed_s, 2) if elapsed_s > 0 else None)
    return {"upstream_mean_ms": mean_ms, "mean_in_flight": in_flight}


class EwmaSampler:
    """Samples every endpoint's peak-EWMA latency estimate every `every_s` while running.

    The balancer keeps the estimate whatever the policy; `peak_ewma` divides by it, so its
    swings explain that policy's shares. `summary(pods)` gives the mean and max per pod, in ms.
    """

    def __init__(self, cluster: Cluster, clock: Callable[[], float], every_s: float = 0.1) -> None:
        self._cluster = cluster
        self._clock = clock  # the balancer's: estimates decay on it
        self._every_s = every_s
        self._samples: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EwmaSampler:
        self._task = asyncio.create_task(self._sample_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sample_forever(self) -> None:
        while True:
            now_s = self._clock()
            for name, ep in self._cluster.endpoints.items():
                self._samples.setdefault(name, []).append(ep.ewma.estimate_s(now_s) * 1000)
            await asyncio.sleep(self._every_s)

    def summary(self, pods: list[str]) -> dict[str, list[float | None]]:
        series = [self._samples.get(pod) or [] for pod in pods]
        return {
            "ewma_mean_ms": [round(sum(s) / len(s), 2) if s else None for s in series],
            "ewma_max_ms": [round(max(s), 2) if s else None for s in series],
        }


async def haproxy_sessions_total(scene: Scene, pod: str) -> int | None:
    """Calls HAProxy has sent to `pod`'s server since it was added (`show stat` stot), or
    None when the scene's engine is not HAProxy or the server is not there. Reads the
    engine's runtime API: HAProxy picks servers itself, so only it can count its picks."""
    engine: Any = scene.balancer.engine
    if engine.name != "haproxy":
        return None
    server = engine._applied[SERVICE].get(pod)
    if server is None:
        return None
    stats = await engine._api.server_stats(engine._backends[SERVICE])
    stat = stats.get(server.name)
    return None if stat is None else int(stat.sessions_total)


def haproxy_holds_drain(scene: Scene, pod: str) -> bool:
    """True once HAProxy accepted `set server … state drain` for `pod`'s server (the
    engine's record of what the running process holds)."""
    server = scene.balancer.engine._applied[SERVICE].get(pod)  # type: ignore[attr-defined]
    return server is not None and server.admin == "drain"


def errors(stats: LoadStats) -> dict[str, int]:
    """Calls that ended with a status other than OK, by code."""
    return {code: n for code, n in sorted(stats.codes.items()) if code != "OK"}


async def set_latency(address: str, latency_ms: float, timeout_s: float = 5.0) -> None:
    """Sets one pod's latency knob at run time (demo.v1 Knobs.Set, straight to the pod)."""
    await set_knobs(address, pb.KnobSettings(latency_ms=latency_ms), timeout_s)


@dataclass
class StreamResult:
    """One server stream's fate: the pod that served it, items received, its status."""

    pod: str | None = None
    items: int = 0
    code: str | None = None  # None while it runs
    first_item: asyncio.Event = field(default_factory=asyncio.Event)


class WatchStreams:
    """`count` WatchItems streams opened through one channel (one connection) to `target`.

    Each asks for `items` items `interval_ms` apart, so it stays in flight for about
    (items − 1) × interval_ms. `open()` returns once every stream has its first item.
    """

    def __init__(self, target: str, count: int, items: int, interval_ms: int) -> None:
        self._target = target
        self._request = pb.WatchItemsRequest(prefix="drain-", count=items, interval_ms=interval_ms)
        self._deadline_s = 30 + items * interval_ms / 1000
        self.results = [StreamResult() for _ in range(count)]
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, timeout_s: float) -> None:
        self._channel = grpc.aio.insecure_channel(self._target)
        watch = self._channel.unary_stream(
            "/ballast.demo.v1.Inventory/WatchItems",
            request_serializer=pb.WatchItemsRequest.SerializeToString,
            response_deserializer=pb.Item.FromString,
        )
        self._tasks = [asyncio.create_task(self._follow(watch, r)) for r in self.results]
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(r.first_item.wait() for r in self.results))

    async def _follow(
        self, watch: grpc.aio.UnaryStreamMultiCallable[Any, pb.Item],
        result: StreamResult,
    ) -> None:  # fmt: skip
        try:
            async for item in watch(self._request, timeout=self._deadline_s):
                result.pod = result.pod or item.pod
                result.items += 1
                result.first_item.set()
            result.code = "OK"
        except grpc.aio.AioRpcError as err:
            result.code = err.code().name
        finally:
            result.first_item.set()  # a stream that failed at once must not hang open()

    def on_pod(self, pod: str) -> list[StreamResult]:
        return [r for r in self.results if r.pod == pod]

    async def wait(self, timeout_s: float) -> None:
        """Returns once every stream ended, or after `timeout_s` (the rest are cancelled)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
