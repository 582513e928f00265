"""Pods with a latency of their own, and steady clients, for the noise tests of load-aware picking.

A `SteadyPod` answers `test.Echo/Unary` after its `delay_ms` (set per pod, unlike
`backend.py`'s per-call metadata), names itself in the `x-backend` header and counts its
calls; `spike(ms)` makes only the next call it starts that slow, a scheduling hiccup.
`SteadyClients` keep a fixed number of calls in flight through a balancer until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.support.backend import UNARY

Context = grpc.aio.ServicerContext[bytes, bytes]


@dataclass
class SteadyPod:
    """A running pod: its name, server, port, latency and the calls it has started."""

    name: str
    delay_ms: float
    server: grpc.aio.Server | None = None
    port: int = 0
    calls: int = 0
    # Delays of the next calls to start, before `delay_ms` applies again.
    spikes_ms: list[float] = field(default_factory=list)
    spiked_calls_done: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spike(self, ms: float) -> None:
        """The next call this pod starts takes `ms`; later ones `delay_ms` again."""
        self.spikes_ms.append(ms)

    async def unary(self, request: bytes, context: Context) -> bytes:
        self.calls += 1
        spiked = bool(self.spikes_ms)
        delay_ms = self.spikes_ms.pop(0) if spiked else self.delay_ms
        await context.send_initial_metadata([("x-backend", self.name)])
        await asyncio.sleep(delay_ms / 1000)
        self.spiked_calls_done += spiked
        return request

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, pod: SteadyPod) -> None:
        self._pod = pod

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == UNARY:
            return grpc.unary_unary_rpc_method_handler(self._pod.unary)
        return None


async def start_steady_pod(name: str, delay_ms: float) -> SteadyPod:
    """A pod on 127.0.0.1, port 0, grpc.health.v1 SERVING, answering in `delay_ms`."""
    pod = SteadyPod(name, delay_ms)
    pod.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pod.server.add_generic_rpc_handlers([_Handler(pod)])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, pod.server)
    pod.port = pod.server.add_insecure_port("127.0.0.1:0")
    await pod.server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return pod


class SteadyClients:
    """`concurrency` loops, each calling `test.Echo/Unary` through `target` one call after
    another on one shared channel, until `stop()`; `errors` counts calls that failed."""

    def __init__(self, target: str, concurrency: int) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._unary = self._channel.unary_unary(UNARY)
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(concurrency)]
        self.errors = 0

    async def _loop(self) -> None:
        while True:
            try:
                await self._unary(b"x", timeout=10)
            except grpc.aio.AioRpcError:
                self.errors += 1

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._channel.close()
