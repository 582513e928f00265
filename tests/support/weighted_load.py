"""Pods that answer after a fixed delay of their own, and closed-loop load that counts which
pod served each call: what a policy's shares and its view of a slow pod are measured with."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

UNARY = "/test.Echo/Unary"

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class DelayedBackend:
    """A unary echo pod on 127.0.0.1 that answers every call after `delay_ms`, with the
    header `x-backend: <name>`."""

    name: str
    delay_ms: float
    server: grpc.aio.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


class _Echo(grpc.GenericRpcHandler):
    def __init__(self, name: str, delay_ms: float) -> None:
        self._name = name
        self._delay_s = delay_ms / 1000

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return grpc.unary_unary_rpc_method_handler(self._unary) if details.method == UNARY else None

    async def _unary(self, request: bytes, context: Context) -> bytes:
        await context.send_initial_metadata([("x-backend", self._name)])
        await asyncio.sleep(self._delay_s)
        return request


async def start_delayed_backend(name: str, delay_ms: float) -> DelayedBackend:
    """Starts a pod on port 0 (no health service: the balancer's checks stay off)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([_Echo(name, delay_ms)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return DelayedBackend(name, delay_ms, server, port)


async def served_by(target: str, *, concurrency: int, calls: int) -> Counter[str]:
    """`calls` unary calls through `target` from `concurrency` workers calling back to back
    on one channel (one HTTP/2 connection, as one busy client); the pods that served them."""
    counts: Counter[str] = Counter()
    left = calls
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(UNARY)

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = call(b"x", timeout=30)
                await answer
                counts[str(dict(await answer.initial_metadata())["x-backend"])] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def shares(counts: Counter[str], names: list[str]) -> list[float]:
    """Each named pod's share of the counted calls, in order."""
    total = sum(counts.values())
    return [counts[name] / total for name in names]
