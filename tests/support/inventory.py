"""A small in-process `ballast.demo.v1.Inventory` server for tests: it answers with its pod name.

It is not the demo workload (demo/workload/): its only knobs are `fail_with`
and `hold()`/`release()`, which keep calls in flight until the test says.
It records what tests check about where calls went: calls per method, calls
per peer (each peer address is one client TCP connection), and, from
channelz, the client connections it holds open right now.

- `GetItem` returns `Item(id, pod, payload=payload_bytes × b"x")`;
- `WatchItems` sends `count` items (`prefix-i`), `interval_ms` apart;
- `ImportItems` answers `ImportSummary(received, pod)`;
- `SyncItems` sends every item back, stamped with the pod.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from balancer import connections
from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class InventoryServer:
    """A running test Inventory; `fail_with` makes every call end with that status."""

    pod: str
    server: grpc.aio.Server
    port: int
    # This server's id in channelz, to count its open connections.
    channelz_id: int
    calls: Counter[str] = field(default_factory=Counter)
    peers: Counter[str] = field(default_factory=Counter)
    fail_with: grpc.StatusCode | None = None
    # Calls wait here before answering: hold() keeps them in flight until release().
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def open_connections(self) -> int:
        """Client connections the gRPC server holds open, as channelz reports them."""
        return sum(connections.connections_by_peer(self.channelz_id).values())

    async def stop(self) -> None:
        await self.server.stop(0)


class _Inventory(pb_grpc.InventoryServicer):  # type: ignore[misc]
    def __init__(self, state: InventoryServer | None = None) -> None:
        self.state = state

    async def _begin(self, method: str, context: Context) -> InventoryServer:
        state = self.state
        assert state is not None
        state.calls[method] += 1
        state.peers[context.peer()] += 1
        await state.gate.wait()
        if state.fail_with is not None:
            await context.abort(state.fail_with, f"{state.pod} is failing")
        return state

    async def GetItem(self, request: pb.GetItemRequest, context: Context) -> pb.Item:
        state = await self._begin("GetItem", context)
        return pb.Item(id=request.id, pod=state.pod, payload=b"x" * request.payload_bytes)

    async def WatchItems(
        self, request: pb.WatchItemsRequest, context: Context
    ) -> AsyncIterator[pb.Item]:
        state = await self._begin("WatchItems", context)
        for i in range(request.count):
            if i and request.interval_ms:
                await asyncio.sleep(request.interval_ms / 1000)
            yield pb.Item(id=f"{request.prefix}-{i}", pod=state.pod)

    async def ImportItems(
        self, requests: AsyncIterator[pb.Item], context: Context
    ) -> pb.ImportSummary:
        state = await self._begin("ImportItems", context)
        received = 0
        async for _ in requests:
            received += 1
        return pb.ImportSummary(received=received, pod=state.pod)

    async def SyncItems(
        self, requests: AsyncIterator[pb.Item], context: Context
    ) -> AsyncIterator[pb.Item]:
        state = await self._begin("SyncItems", context)
        async for item in requests:
            yield pb.Item(id=item.id, pod=state.pod, payload=item.payload)


async def start_inventory(pod: str) -> InventoryServer:
    """Starts a test Inventory on 127.0.0.1, port 0, answering as `pod`.

    Start servers one at a time: the channelz id is found as the one server that
    appeared during this call.
    """
    before = connections.server_ids()
    servicer = _Inventory()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_InventoryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    (channelz_id,) = connections.server_ids() - before
    servicer.state = InventoryServer(pod=pod, server=server, port=port, channelz_id=channelz_id)
    return servicer.state


class InventoryFleet:
    """Test Inventories started on demand and all stopped by `stop_all()` (fixture teardown)."""

    def __init__(self) -> None:
        self.servers: list[InventoryServer] = []

    async def start(self, pod: str) -> InventoryServer:
        server = await start_inventory(pod)
        self.servers.append(server)
        return server

    async def stop_all(self) -> None:
        for server in self.servers:
            await server.stop()


@contextmanager
def dead_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, as to a dead pod."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]
