"""Client connections to the balancer, per peer, from channelz.

gRPC keeps one HTTP/2 connection per client channel for hours; counting them
per peer shows which clients hold connections (and to whom an L4 hop pinned
them). channelz is gRPC's own live view of sockets, so nothing is counted on
the request path.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from grpc_channelz.v1 import channelz_pb2
from grpc_channelz.v1.channelz import ChannelzServicer


class _Context:
    """The servicer's static methods want a context only to report errors."""

    def __init__(self) -> None:
        self.details = ""

    def set_code(self, code: Any) -> None:
        pass

    def set_details(self, details: str) -> None:
        self.details = details


def server_ids() -> set[int]:
    """Ids of every gRPC server in this process."""
    ids: set[int] = set()
    start = 0
    while True:
        response = ChannelzServicer.GetServers(
            channelz_pb2.GetServersRequest(start_server_id=start), _Context()
        )
        if response is None:
            return ids
        ids.update(s.ref.server_id for s in response.server)
        if response.end or not response.server:
            return ids
        start = max(ids) + 1


def connections_by_peer(server_id: int) -> dict[str, int]:
    """Open client connections to one server, counted by the peer's IP address."""
    peers: Counter[str] = Counter()
    start = 0
    while True:
        request = channelz_pb2.GetServerSocketsRequest(server_id=server_id, start_socket_id=start)
        response = ChannelzServicer.GetServerSockets(request, _Context())
        if response is None:
            break
        for ref in response.socket_ref:
            peers[_peer_host(ref.name)] += 1
            start = max(start, ref.socket_id + 1)
        if response.end or not response.socket_ref:
            break
    return dict(peers)


def _peer_host(socket_name: str) -> str:
    """`chttp2 ipv4:127.0.0.1:59842` → `127.0.0.1`; `ipv6:[::1]:5` → `::1`."""
    address = socket_name.rsplit(" ", 1)[-1]
    _, _, host_port = address.partition(":")
    host = host_port.rpartition(":")[0] or host_port
    return host.strip("[]")
