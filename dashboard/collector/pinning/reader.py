"""Reading the pods' channelz: the client connections each pod holds, and whose they are
(see the package's docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import grpc
import grpc.aio
from grpc_channelz.v1 import channelz_pb2, channelz_pb2_grpc

from balancer.admin.snapshot import UPSTREAM_READ_S
from balancer.connections import client_local_addresses, tcpip_address
from platforms.base import PodFacts

log = logging.getLogger(__name__)

# channelz is read this often: a read is one call per socket per pod, too many for
# every frame (1 s), and connections that pin pods live for minutes to hours.
READ_INTERVAL_S = 5.0
CHANNELZ_TIMEOUT_S = 2.0
MAX_SOCKETS_READ = 200  # per pod and read: past this the rest are not looked up
# A client's connection is shown once seen this long: a replica reads its own upstream
# connections every UPSTREAM_READ_S and its snapshot reaches the collector within a few
# intervals, so a new connection of Ballast's is known as Ballast's by then.
CONFIRM_S = UPSTREAM_READ_S + 3.0

# ballast: the proxy's own; bypass: a client that does not use Ballast; client: the same
# or a proxyless client (its host runs one: not told apart by address); unknown: the
# engine's own connections are not known (HAProxy), so it may be Ballast's too.
Origin = Literal["ballast", "bypass", "client", "unknown"]
WallClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class SocketRead:
    """One connection a pod's gRPC server holds, as its channelz shows it."""

    socket_id: int
    peer: str  # "ip:port"
    streams_started: int


class ConnectionFrame(TypedDict):
    peer: str
    origin: str  # bypass, client (bypass or proxyless) or unknown (see Origin)
    calls_s: float | None  # calls started per second over the last read interval
    calls: int  # calls started since it opened
    age_s: int
    at_least: bool  # it was open at the collector's first read: older, maybe


# (pod, its gRPC address) → the connections its servers hold.
Fetch = Callable[[str, str], Awaitable[list[SocketRead]]]


@dataclass
class _Seen:
    first_seen_s: float
    at_first_read: bool
    streams: int
    calls_s: float | None
    origin: Origin
    peer: str


@dataclass(frozen=True)
class Whose:
    """What tells a pod's connections apart: the local addresses of Ballast's upstream
    connections, whether they are all of them, and the hosts of proxyless clients."""

    ballast: Collection[str]
    complete: bool = True
    xds_hosts: Collection[str] = ()

    def origin(self, peer: str) -> Origin:
        if peer in self.ballast:
            return "ballast"
        if not self.complete:
            return "unknown"
        return "client" if host_of(peer) in self.xds_hosts else "bypass"


def host_of(peer: str) -> str:
    """`127.0.0.1:5` → `127.0.0.1`; `[::1]:5` → `::1`; `ipv4:10.0.0.7:5` (a gRPC peer) →
    `10.0.0.7`."""
    for scheme in ("ipv4:", "ipv6:"):
        peer = peer.removeprefix(scheme)
    return peer.rpartition(":")[0].strip("[]") or peer


class _Pod:
    """What the collector knows of one pod's connections."""

    def __init__(self) -> None:
        self.sockets: dict[int, _Seen] = {}
        self.first_read_s: float | None = None
        self.last_read_s: float | None = None
        self.answers = False  # its channelz answered the last read


class PinningReader:
    """Reads the pods' channelz and keeps each open connection's figures.

    `read(pods, whose)` reads every pod with a gRPC address at once (`Whose`: what tells
    their connections apart). `connections(pod)` is None for a pod whose channelz did
    not answer (no detail; logged once until it answers).
    """

    def __init__(
        self,
        fetch: Fetch | None = None,
        *,
        clock: WallClock = time.time,
        own_addresses: Callable[[], Mapping[str, Sequence[str]]] = client_local_addresses,
    ) -> None:
        self._fetch = fetch or self._fetch_over_grpc
        self._clock = clock
        self._own_addresses = own_addresses
        self._pods: dict[str, _Pod] = {}
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}  # pod → (address, ch)
        self._failing: set[str] = set()

    async def read(self, pods: Iterable[PodFacts], whose: Whose) -> None:
        """One read of every pod listed with an address; never raises for a pod."""
        targets = {p.name: p.address for p in pods if p.address}
        for gone in self._pods.keys() - targets.keys():
            await self.forget(gone)
        names = list(targets)
        got = await asyncio.gather(
            *(self._fetch(name, targets[name]) for name in names), return_exceptions=True
        )
        # In a thread, as the balancer reads its own (admin/snapshot.py): the walk over
        # this process's channels (a balancer's too, in the demo) would stall the loop.
        own = await asyncio.to_thread(self._own_addresses)
        now_s = self._clock()
        for name, sockets in zip(names, got, strict=True):
            address = targets[name]
            if isinstance(sockets, BaseException):
                self._failed(name, address, sockets)
                continue
            mine = set(own.get(_own_target(address), ()))
            theirs = [s for s in sockets if s.peer not in mine]
            self.observe(name, theirs, now_s, whose)

    def observe(
        self,
        pod: str,
        sockets: Iterable[SocketRead],
        now_s: float,
        whose: Whose,
    ) -> None:
        """Takes one read of `pod`'s connections (the collector's own left out)."""
        state = self._pods.setdefault(pod, _Pod())
        if pod in self._failing:
            self._failing.discard(pod)
            log.info("pod %s: channelz answers again", pod)
        first = state.first_read_s is None
        if first:
            state.first_read_s = now_s
        elapsed_s = None if state.last_read_s is None else now_s - state.last_read_s
        seen: dict[int, _Seen] = {}
        for s in sockets:
            before = state.sockets.get(s.socket_id)
            seen[s.socket_id] = _next(before, s, now_s, elapsed_s, first, whose)
        state.sockets = seen  # sockets that closed are forgotten here
        state.last_read_s = now_s
        state.answers = True

    def _failed(self, pod: str, address: str, err: BaseException) -> None:
        state = self._pods.setdefault(pod, _Pod())
        state.answers = False
        state.sockets = {}
        state.first_read_s = state.last_read_s = None
        if pod in self._failing:
            log.debug("pod %s: channelz failed again: %r", pod, err)
            return
        self._failing.add(pod)
        what = err.code().name if isinstance(err, grpc.aio.AioRpcError) else repr(err)
        log.info(
            "pod %s: no channelz at %s (%s): its client connections are not shown,"
            " the pinning finding rests on its call counts",
            pod, address, what,
        )  # fmt: skip

    def connections(self, pod: str) -> list[tuple[Origin, ConnectionFrame]] | None:
        """The pod's open connections, busiest first; None when its channelz did not
        answer (or was not read yet). A client's connection is listed once the collector
        has seen it for CONFIRM_S: what pins a pod lives long, while a probe (the
        kubelet's, the local platform's) opens a connection per check that a read
        catches now and then, and a new connection of Ballast's reaches the replicas'
        snapshots a few seconds late."""
        state = self._pods.get(pod)
        if state is None or not state.answers:
            return None
        now_s = self._clock()
        held = [
            s
            for s in state.sockets.values()
            if s.origin == "ballast" or now_s - s.first_seen_s >= CONFIRM_S
        ]
        rows = [(s.origin, _frame(s, now_s)) for s in held]
        rows.sort(key=lambda r: (-(r[1]["calls_s"] or 0.0), -r[1]["calls"], r[1]["peer"]))
        return rows

    async def forget(self, pod: str) -> None:
        self._pods.pop(pod, None)
        self._failing.discard(pod)
        held = self._channels.pop(pod, None)
        if held is not None:
            await held[1].close()

    async def close(self) -> None:
        for pod in list(self._channels):
            await self.forget(pod)

    async def _fetch_over_grpc(self, pod: str, address: str) -> list[SocketRead]:
        held = self._channels.get(pod)
        if held is None or held[0] != address:
            if held is not None:
                await held[1].close()
            # "dns:host:port", not "host:port": a balancer in this process (the demo)
            # finds its upstream channels by target, and must not take this one for one.
            # Its own subchannel pool: a connection shared with another channel of this
            # process would take that channel's connection for the collector's own.
            channel = grpc.aio.insecure_channel(_own_target(address), options=_OWN_OPTIONS)
            held = (address, channel)
            self._channels[pod] = held
        return await read_channelz(held[1])


_OWN_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


def _own_target(address: str) -> str:
    return f"dns:{address}"


def _next(
    before: _Seen | None,
    s: SocketRead,
    now_s: float,
    elapsed_s: float | None,
    first: bool,
    whose: Whose,
) -> _Seen:
    """A socket's figures after one more read: its calls over the interval (a socket new
    since the last read started all its calls in it), its origin (Ballast's once matched:
    a socket's peer never changes, and a new upstream connection reaches the replicas'
    snapshots a read or two late)."""
    ballast = before is not None and before.origin == "ballast"
    origin = "ballast" if ballast else whose.origin(s.peer)
    if elapsed_s is None or elapsed_s <= 0:
        calls_s = None
    else:
        since = s.streams_started - (before.streams if before is not None else 0)
        calls_s = max(0, since) / elapsed_s
    if before is None:
        return _Seen(now_s, first, s.streams_started, calls_s, origin, s.peer)
    return _Seen(before.first_seen_s, before.at_first_read, s.streams_started, calls_s, origin,
                 s.peer)  # fmt: skip


def _frame(s: _Seen, now_s: float) -> ConnectionFrame:
    return {
        "peer": s.peer,
        "origin": s.origin,
        "calls_s": None if s.calls_s is None else round(s.calls_s, 1),
        "calls": s.streams,
        "age_s": max(0, round(now_s - s.first_seen_s)),
        "at_least": s.at_first_read,
    }


async def read_channelz(channel: grpc.aio.Channel) -> list[SocketRead]:
    """The connections every gRPC server of the process behind `channel` holds (at most
    MAX_SOCKETS_READ); raises AioRpcError when it serves no channelz (UNIMPLEMENTED)."""
    stub = channelz_pb2_grpc.ChannelzStub(channel)
    servers = await stub.GetServers(channelz_pb2.GetServersRequest(), timeout=CHANNELZ_TIMEOUT_S)
    ids: list[int] = []
    for server in servers.server:
        ids += await _server_socket_ids(stub, server.ref.server_id, MAX_SOCKETS_READ - len(ids))
    got = await asyncio.gather(*(_socket(stub, i) for i in ids))
    return [s for s in got if s is not None]


async def _server_socket_ids(stub: Any, server_id: int, room: int) -> list[int]:
    ids: list[int] = []
    start = 0
    while len(ids) < room:
        request = channelz_pb2.GetServerSocketsRequest(
            server_id=server_id, start_socket_id=start, max_results=room - len(ids)
        )
        response = await stub.GetServerSockets(request, timeout=CHANNELZ_TIMEOUT_S)
        ids += [ref.socket_id for ref in response.socket_ref][: room - len(ids)]
        if response.end or not response.socket_ref:
            break
        start = max(ref.socket_id for ref in response.socket_ref) + 1
    return ids


async def _socket(stub: Any, socket_id: int) -> SocketRead | None:
    """One socket; None when it closed since it was listed, or is not TCP/IP."""
    request = channelz_pb2.GetSocketRequest(socket_id=socket_id)
    try:
        response = await stub.GetSocket(request, timeout=CHANNELZ_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.NOT_FOUND:
            return None
        raise
    peer = tcpip_address(response.socket.remote)
    if peer is None:
        return None
    return SocketRead(socket_id, peer, response.socket.data.streams_started)
