"""The readiness probe: grpc.health.v1 Check on a pod's port, as the kubelet's gRPC probe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from platforms.local.spec import ProbeSpec


def _channel_options(spec: ProbeSpec) -> list[tuple[str, int]]:
    # A pod that is still starting refuses connections, and gRPC's default reconnect
    # backoff (1 s growing to 120 s, ±20 %) would delay readiness far past the probe
    # interval. Half an interval (jitter included) reconnects before the next probe.
    backoff_ms = max(1, int(spec.interval_s * 1000 / 2))
    return [
        # Our own connection: a balancer in this process must not share its backoff.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.initial_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


class ReadinessProbe:
    """Checks one pod every interval; calls `on_change(ready)` when the thresholds flip it.

    The pod starts unready. `run` goes on until cancelled and closes its channel.
    """

    def __init__(self, target: str, spec: ProbeSpec, on_change: Callable[[bool], None]) -> None:
        self._target = target
        self._spec = spec
        self._on_change = on_change
        self.ready = False
        self._passes = 0
        self._failures = 0

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(
            self._target, options=_channel_options(self._spec)
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self.record(await self._check(stub))
                await asyncio.sleep(self._spec.interval_s)

    async def _check(self, stub: health_pb2_grpc.HealthStub) -> bool:
        request = health_pb2.HealthCheckRequest(service=self._spec.service)
        try:
            response = await stub.Check(request, timeout=self._spec.timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def record(self, passed: bool) -> None:
        """Counts one result; flips readiness when a threshold is reached."""
        if passed:
            self._failures = 0
            self._passes += 1
            if not self.ready and self._passes >= self._spec.success_threshold:
                self._flip(True)
        else:
            self._passes = 0
            self._failures += 1
            if self.ready and self._failures >= self._spec.failure_threshold:
                self._flip(False)

    def _flip(self, ready: bool) -> None:
        self.ready = ready
        self._on_change(ready)
