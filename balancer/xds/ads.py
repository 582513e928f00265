"""ADS, state of the world: answers each client's subscriptions from the snapshot cache.

Per stream and resource type the server keeps what the client subscribed to,
the version and nonce it last sent (go-control-plane's shape). A request whose
`response_nonce` is the last one sent is an ACK (no `error_detail`) or a NACK
(with one); a request with an older nonce is stale and ignored. A NACKed
version is not sent again: the client keeps its last good config until the
next change. What each client ACKed and NACKed is kept in `clients`, per node
id, while its stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from balancer.xds.cache import SnapshotCache
from balancer.xds.resources import CLUSTER, LISTENER, TYPE_NAMES, TYPES, Snapshot

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
# Types whose state-of-the-world response must hold every subscribed resource (xDS spec);
# for the others only the named ones are sent.
_FULL_STATE_TYPES = (LISTENER, CLUSTER)
_QUEUE_LIMIT = 64


@dataclass
class Nack:
    """A client's refusal of a version: what it said, and when."""

    version: str
    nonce: str
    message: str
    at_unix_s: float


@dataclass
class TypeStatus:
    """One client's view of one resource type."""

    names: frozenset[str] = frozenset()
    sent_version: str = ""
    nonce: str = ""
    acked_version: str = ""
    # The last NACK, kept until the client ACKs a later version.
    nack: Nack | None = None


@dataclass
class ClientStatus:
    """One ADS stream: who it is, and per type URL what it has."""

    stream_id: int
    peer: str
    node_id: str = ""
    connected_at_unix_s: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def pending_nacks(self) -> dict[str, Nack]:
        return {t: s.nack for t, s in self.types.items() if s.nack is not None}

    def in_sync(self, snapshot: Snapshot) -> bool:
        """True when every subscribed type has ACKed the snapshot's version."""
        return bool(self.types) and all(
            s.acked_version == snapshot.version(t) for t, s in self.types.items()
        )


class AdsService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """envoy.service.discovery.v3.AggregatedDiscoveryService over a SnapshotCache."""

    def __init__(self, cache: SnapshotCache) -> None:
        self._cache = cache
        self._stream_ids = itertools.count(1)
        self.clients: dict[int, ClientStatus] = {}

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Context
    ) -> None:
        client = ClientStatus(next(self._stream_ids), context.peer())
        self.clients[client.stream_id] = client
        stream = _Stream(client, self._cache, context)
        try:
            await stream.run(request_iterator)
        finally:
            del self.clients[client.stream_id]
            log.info("xds: client %s (%s) disconnected", client.node_id, client.peer)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Context
    ) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "ballast xds: only state-of-the-world ADS is served; use the SotW protocol",
        )


class _Signal(enum.Enum):
    CHANGED = "the cache has a new snapshot"
    END = "the client closed its side of the stream"


class _Stream:
    def __init__(self, client: ClientStatus, cache: SnapshotCache, context: Context) -> None:
        self._client = client
        self._cache = cache
        self._context = context
        self._nonces = itertools.count(1)
        # Bounded: a client that floods requests waits for the server to read them.
        self._queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | _Signal] = asyncio.Queue(
            _QUEUE_LIMIT
        )
        self._change_pending = False

    def _wake(self) -> None:
        if self._change_pending:
            return  # one pending wake is enough
        self._change_pending = True
        with contextlib.suppress(asyncio.QueueFull):  # the flag is seen after the next item
            self._queue.put_nowait(_Signal.CHANGED)

    async def run(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        """Answers requests and pushes changes until the client ends the stream."""
        unwatch = self._cache.watch(self._wake)
        reader = asyncio.get_running_loop().create_task(self._read(requests))
        try:
            while (item := await self._queue.get()) is not _Signal.END:
                if item is not _Signal.CHANGED:
                    await self._on_request(item)
                if self._change_pending:
                    self._change_pending = False
                    await self._push_changed()
        finally:
            unwatch()
            reader.cancel()

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            async for request in requests:
                await self._queue.put(request)
        except Exception as err:  # the connection broke: the stream ends as if closed
            log.debug("xds: client %s stream broke: %r", self._client.peer, err)
        await self._queue.put(_Signal.END)

    def _snapshot(self) -> Snapshot:
        return self._cache.snapshot(self._client.node_id)

    async def _on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        client = self._client
        if request.node.id and not client.node_id:
            client.node_id = request.node.id
            log.info("xds: client %s connected from %s", client.node_id, client.peer)
        if request.type_url not in TYPES:
            # Envoy's way: a type the server does not serve is ignored, and not remembered.
            log.debug("xds: client %s asked for unserved type %s", client.peer, request.type_url)
            return
        status = client.types.setdefault(request.type_url, TypeStatus())
        names = frozenset(request.resource_names)
        if request.response_nonce:
            if request.response_nonce != status.nonce:
                return  # stale: an answer to a response the client has since been sent
            self._record_reply(request, status)
            if names == status.names:
                if status.nack is None and status.sent_version != self._snapshot().version(
                    request.type_url
                ):
                    await self._send(request.type_url, status)
                return
        status.names = names
        await self._send(request.type_url, status)

    def _record_reply(self, request: discovery_pb2.DiscoveryRequest, status: TypeStatus) -> None:
        kind = TYPE_NAMES.get(request.type_url, request.type_url)
        if request.HasField("error_detail"):
            message = request.error_detail.message
            status.nack = Nack(status.sent_version, status.nonce, message, time.time())
            log.warning(
                "xds: client %s (%s) NACKed %s version %s: %s",
                self._client.node_id, self._client.peer, kind, status.sent_version, message,
            )  # fmt: skip
        else:
            status.acked_version = request.version_info
            status.nack = None

    async def _push_changed(self) -> None:
        snapshot = self._snapshot()
        for type_url, status in list(self._client.types.items()):
            if status.nonce and status.sent_version != snapshot.version(type_url):
                await self._send(type_url, status)

    async def _send(self, type_url: str, status: TypeStatus) -> None:
        snapshot = self._snapshot()
        resources = snapshot.resources.get(type_url, {})
        wildcard = not status.names and type_url in _FULL_STATE_TYPES
        chosen = [r for n, r in sorted(resources.items()) if wildcard or n in status.names]
        status.sent_version = snapshot.version(type_url)
        status.nonce = str(next(self._nonces))
        response = discovery_pb2.DiscoveryResponse(
            version_info=status.sent_version,
            type_url=type_url,
            nonce=status.nonce,
            resources=[_pack(r) for r in chosen],
        )
        await self._context.write(response)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
