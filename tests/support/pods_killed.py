"""Real demo-workload pods and steady clients, for the pods-killed fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import grpc.aio

from demo.v1 import workload_pb2
from platforms.local import processes

GET_ITEM = "/ballast.demo.v1.Inventory/GetItem"
REQUEST = workload_pb2.GetItemRequest(id="item-1").SerializeToString()
START_TIMEOUT_S = 60.0


@dataclass
class WorkloadPod:
    """One `python -m demo.workload` process on a loopback port."""

    name: str
    process: processes.Process
    address: str

    def kill(self) -> None:
        """SIGKILL, as a node failure or the OOM killer ends a pod."""
        processes.kill_group(self.process)


async def start_pod(name: str, *knobs: str) -> WorkloadPod:
    """Starts a demo workload pod and returns once it serves (its JSON line is out)."""
    argv = [sys.executable, "-m", "demo.workload", "--name", name, "--port", "0",
            "--metrics-port", "0", "--log-level", "WARNING", *knobs]  # fmt: skip
    process = await processes.spawn(
        argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
    if not line:
        raise RuntimeError(f"pod {name} exited with {await process.wait()} before serving")
    return WorkloadPod(name, process, json.loads(line)["grpc"])


async def start_pods(count: int, *knobs: str) -> list[WorkloadPod]:
    return list(await asyncio.gather(*(start_pod(f"pod-{i}", *knobs) for i in range(count))))


async def stop_pods(pods: list[WorkloadPod]) -> None:
    await asyncio.gather(*(processes.terminate(p.process, grace_s=2.0) for p in pods))


@dataclass(frozen=True)
class CallResult:
    started_s: float  # time.monotonic(), the balancer's clock
    ended_s: float
    code: grpc.StatusCode
    details: str


@dataclass
class Traffic:
    """`clients` callers, each calling GetItem through the balancer back to back."""

    target: str
    clients: int = 12
    timeout_s: float = 10.0
    results: list[CallResult] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _channel: grpc.aio.Channel | None = None

    def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client()) for _ in range(self.clients)]

    async def _client(self) -> None:
        assert self._channel is not None
        call = self._channel.unary_unary(GET_ITEM)
        while True:
            started = time.monotonic()
            try:
                await call(REQUEST, timeout=self.timeout_s)
                code, details = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as err:
                code, details = err.code(), err.details() or ""
            self.results.append(CallResult(started, time.monotonic(), code, details))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close()

    def errors(self, *, ended_after_s: float = 0.0, started_after_s: float = 0.0) -> Counter[str]:
        """Failed calls by code, of those that ended / started after the given times."""
        return Counter(
            r.code.name
            for r in self.results
            if r.code is not grpc.StatusCode.OK
            and r.ended_s > ended_after_s
            and r.started_s > started_after_s
        )

    def ok(self, *, started_after_s: float = 0.0) -> int:
        return sum(
            1
            for r in self.results
            if r.code is grpc.StatusCode.OK and r.started_s > started_after_s
        )
