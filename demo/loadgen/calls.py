"""The four Inventory calls a load client makes, one per RPC kind.

Each returns the pod that served it: the `pod` of the answer (unary, client
stream) or of the first message (server stream, bidi), or None when a stream
answered nothing. Failures raise grpc.aio.AioRpcError, as the call does.
Multicallables are built on the channel with the generated messages'
serializers (the generated stub is untyped).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import grpc.aio

from demo.loadgen.spec import ClientSpec, Method
from demo.v1 import workload_pb2 as pb

_SERVICE = "/ballast.demo.v1.Inventory/"


class Calls:
    """The four methods on one channel, shaped by a client's spec."""

    def __init__(self, channel: grpc.aio.Channel, spec: ClientSpec) -> None:
        self._spec = spec
        # One payload per client, reused: its content does not matter, its size does.
        self._payload = b"x" * spec.payload_bytes
        self._get_item = channel.unary_unary(
            _SERVICE + "GetItem",
            request_serializer=pb.GetItemRequest.SerializeToString,
            response_deserializer=pb.Item.FromString,
        )
        self._watch_items = channel.unary_stream(
            _SERVICE + "WatchItems",
            request_serializer=pb.WatchItemsRequest.SerializeToString,
            response_deserializer=pb.Item.FromString,
        )
        self._import_items = channel.stream_unary(
            _SERVICE + "ImportItems",
            request_serializer=pb.Item.SerializeToString,
            response_deserializer=pb.ImportSummary.FromString,
        )
        self._sync_items = channel.stream_stream(
            _SERVICE + "SyncItems",
            request_serializer=pb.Item.SerializeToString,
            response_deserializer=pb.Item.FromString,
        )

    def by_method(self) -> dict[Method, Callable[[str], Awaitable[str | None]]]:
        return {
            "unary": self.unary,
            "server_stream": self.server_stream,
            "client_stream": self.client_stream,
            "bidi": self.bidi,
        }

    async def unary(self, call_id: str) -> str | None:
        request = pb.GetItemRequest(id=call_id, payload_bytes=self._spec.payload_bytes)
        item = await self._get_item(request, timeout=self._spec.deadline_s)
        return item.pod or None

    async def server_stream(self, call_id: str) -> str | None:
        spec = self._spec
        request = pb.WatchItemsRequest(
            prefix=call_id, count=spec.stream_messages, interval_ms=spec.stream_interval_ms
        )
        pod: str | None = None
        async for item in self._watch_items(request, timeout=spec.deadline_s):
            pod = pod or item.pod or None
        return pod

    async def client_stream(self, call_id: str) -> str | None:
        summary = await self._import_items(self._items(call_id), timeout=self._spec.deadline_s)
        return summary.pod or None

    async def bidi(self, call_id: str) -> str | None:
        pod: str | None = None
        async for item in self._sync_items(self._items(call_id), timeout=self._spec.deadline_s):
            pod = pod or item.pod or None
        return pod

    def _items(self, call_id: str) -> Iterator[pb.Item]:
        for i in range(self._spec.stream_messages):
            yield pb.Item(id=f"{call_id}-{i}", payload=self._payload)
