"""Client connections to the balancer, per peer, from channelz.

gRPC keeps one HTTP/2 connection per client channel for hours; counting them
per peer shows which clients hold connections (and to whom an L4 hop pinned
them). channelz is gRPC's own live view of sockets, so nothing is counted on
the request path.
"""

from __future__ import annotations

import ipaddress
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


# A channel's sockets listed at most: a plain host:port channel holds one connection
# (a few for a moment while one is replaced), so this only bounds a misbehaving one.
MAX_SOCKETS_PER_TARGET = 16


def client_local_addresses() -> dict[str, tuple[str, ...]]:
    """The local addresses ("ip:port") of this process's client connections, by the
    target their channel was opened with ("dns:///" left off: `127.0.0.1:5001`).

    These are the peers a server sees for this process's calls, so a pod's channelz can
    tell this process's connections from others. Read from channelz in the process,
    top channel → subchannels → sockets; a socket that closed meanwhile is skipped.
    """
    found: dict[str, list[str]] = {}
    for channel in _top_channels():
        target = channel.data.target.removeprefix("dns:///")
        addresses = found.setdefault(target, [])
        for ref in channel.subchannel_ref:
            for socket_id in _subchannel_sockets(ref.subchannel_id):
                if len(addresses) < MAX_SOCKETS_PER_TARGET:
                    addresses.extend(_local_address(socket_id))
    return {target: tuple(addresses) for target, addresses in found.items() if addresses}


def _top_channels() -> list[Any]:
    channels: list[Any] = []
    start = 0
    while True:
        request = channelz_pb2.GetTopChannelsRequest(start_channel_id=start)
        response = ChannelzServicer.GetTopChannels(request, _Context())
        if response is None or not response.channel:
            return channels
        channels.extend(response.channel)
        if response.end:
            return channels
        start = max(c.ref.channel_id for c in response.channel) + 1


def _subchannel_sockets(subchannel_id: int) -> list[int]:
    request = channelz_pb2.GetSubchannelRequest(subchannel_id=subchannel_id)
    response = ChannelzServicer.GetSubchannel(request, _Context())
    return [] if response is None else [s.socket_id for s in response.subchannel.socket_ref]


def _local_address(socket_id: int) -> list[str]:
    response = ChannelzServicer.GetSocket(
        channelz_pb2.GetSocketRequest(socket_id=socket_id), _Context()
    )
    if response is None:  # closed since it was listed
        return []
    address = tcpip_address(response.socket.local)
    return [] if address is None else [address]


def tcpip_address(address: Any) -> str | None:
    """A channelz `Address` as "ip:port" ("[::1]:5" for IPv6); None when it is not TCP/IP."""
    if not address.HasField("tcpip_address"):
        return None
    ip = ipaddress.ip_address(address.tcpip_address.ip_address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{host}:{address.tcpip_address.port}"
