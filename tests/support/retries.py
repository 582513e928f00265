"""Helpers for the retry tests: configs over test servers, the admin snapshot, call counting."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import BalancerConfig, config_from_dict
from balancer.server import Balancer
from demo.v1 import workload_pb2 as pb
from tests.support.balancing import ADMIN_TOKEN
from tests.support.inventory import InventoryServer

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
GET_ITEM = "/ballast.demo.v1.Inventory/GetItem"
WATCH_ITEMS = "/ballast.demo.v1.Inventory/WatchItems"
IMPORT_ITEMS = "/ballast.demo.v1.Inventory/ImportItems"


def inventory_config(
    servers: Sequence[InventoryServer], retry: dict[str, Any] | None = None, **cluster: Any
) -> BalancerConfig:
    """One cluster `inventory` over test Inventories (named by pod), round robin, admin API on,
    outlier detection off (so a failing pod keeps its share and every retry is counted)."""
    data: dict[str, Any] = {
        "balancer": {"id": "test"},
        "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0", "token": ADMIN_TOKEN},
        "clusters": [{
            "name": "inventory",
            "outlier_detection": {"enabled": False},
            "discovery": {"endpoints": [{"address": s.address, "name": s.pod} for s in servers]},
            **({"retry": retry} if retry is not None else {}),
            **cluster,
        }],
    }  # fmt: skip
    return config_from_dict(data, environ={})


async def snapshot(balancer: Balancer) -> admin_pb2.ClusterSnapshot:
    """The first cluster's snapshot, read over the admin API as a user would."""
    assert balancer.admin_address is not None
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        whole: admin_pb2.Snapshot = await stub.GetSnapshot(
            admin_pb2.GetSnapshotRequest(), metadata=AUTH
        )
    cluster: admin_pb2.ClusterSnapshot = whole.clusters[0]
    return cluster


def by_pod(cluster: admin_pb2.ClusterSnapshot) -> dict[str, admin_pb2.EndpointSnapshot]:
    return {ep.endpoint_id: ep for ep in cluster.endpoints}


async def get_items(channel: grpc.aio.Channel, n: int, payload_bytes: int = 0) -> Counter[str]:
    """`n` GetItem calls one after another: codes by name (OK included)."""
    codes: Counter[str] = Counter()
    call = channel.unary_unary(GET_ITEM, request_serializer=pb.GetItemRequest.SerializeToString)
    for i in range(n):
        request = pb.GetItemRequest(id=f"item-{i}", payload_bytes=payload_bytes)
        try:
            await call(request, timeout=10)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as err:
            codes[err.code().name] += 1
    return codes


SINK = "/test.Sink/Put"


@dataclass
class Sink:
    """A client-streaming server that reads every request message, then answers with their
    total size — or, when `failing`, UNAVAILABLE as a trailers-only answer (no headers)."""

    name: str
    server: grpc.aio.Server
    port: int
    failing: bool = False
    calls: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


class _SinkHandler(grpc.GenericRpcHandler):
    def __init__(self, ref: list[Sink]) -> None:
        self._ref = ref

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != SINK:
            return None
        return grpc.stream_unary_rpc_method_handler(self._put)

    async def _put(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        sink = self._ref[0]
        sink.calls += 1
        size = sum([len(r) async for r in requests])
        if sink.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{sink.name} is failing")
        return str(size).encode()


async def start_sink(name: str) -> Sink:
    ref: list[Sink] = []
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([_SinkHandler(ref)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ref.append(Sink(name, server, port))
    return ref[0]
