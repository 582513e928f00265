"""Diagnose pinning: clients that bypass Ballast and hold a pod by long-lived connections.

Per pod, two views. From the counts (frames.py): the share of the pod's calls that
bypassed Ballast (its own count minus Ballast's and the proxyless clients'). From the
pod's channelz, where it serves it (on its gRPC address): the client connections it
holds, each with its peer, the calls started over the last read interval (the diff of
channelz `streams_started`, keyed by socket id), its total calls and its age.

channelz has no creation time, so a connection's age counts from the read that first
saw it; one that was already there at the collector's first read of the pod is "at
least" that old. A socket gone from the pod's list is forgotten.

Whose connection is it? The balancer replicas report the local addresses of their
upstream connections (admin.proto `EndpointSnapshot.upstream_local_addresses`, read from
channelz in the balancer's process): a pod's peer that equals one of them is Ballast's.
The collector's own channelz connection is left out (it knows its local address the
same way). Everything else is a client's: one that bypasses Ballast, or a proxyless
client (balanced by Ballast's xDS server, but connecting to the pod itself). A
proxyless client's connections to pods share nothing with its xDS stream but the host:
a connection from a host that runs one (a peer of the replicas' xDS servers) is a
"client" connection, bypassing or proxyless, and the finding says they cannot be told
apart; from any other host it is "bypass". (Behind a NAT that hides the clients' hosts
a proxyless client would count as bypassing.) Under the HAProxy engine the replicas'
own connections are not known (`Snapshot.upstream_addresses_complete` false):
connections are then "unknown" and the finding rests on the counts.

`reader.py` reads the pods; `finding.py` turns a frame and the connections into the
frame's `pinning` and the finding's words. Bounded: channelz is read every
READ_INTERVAL_S (not each frame), at most MAX_SOCKETS_READ sockets per pod,
LISTED_PER_POD connections per pod (frames carry the pinned pod's only: `slim`); the
state kept is one entry per open socket of the pods listed now.
"""

from __future__ import annotations

from dashboard.collector.pinning.finding import (
    LISTED_PER_POD,
    MIN_BYPASS_SHARE,
    PinningFrame,
    PinningPod,
    bypass_share,
    finding_text,
    pinning_frame,
    shares_of,
    slim,
    window_shares,
)
from dashboard.collector.pinning.reader import (
    CONFIRM_S,
    MAX_SOCKETS_READ,
    READ_INTERVAL_S,
    ConnectionFrame,
    Origin,
    PinningReader,
    SocketRead,
    Whose,
    host_of,
    read_channelz,
)

__all__ = [
    "CONFIRM_S",
    "LISTED_PER_POD",
    "MAX_SOCKETS_READ",
    "MIN_BYPASS_SHARE",
    "READ_INTERVAL_S",
    "ConnectionFrame",
    "Origin",
    "PinningFrame",
    "PinningPod",
    "PinningReader",
    "SocketRead",
    "Whose",
    "bypass_share",
    "finding_text",
    "host_of",
    "pinning_frame",
    "read_channelz",
    "shares_of",
    "slim",
    "window_shares",
]
