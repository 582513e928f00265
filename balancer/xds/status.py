"""What the xDS server shows: plain, immutable views for the admin snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from balancer.xds.ads import ClientStatus
from balancer.xds.resources import TYPE_NAMES, TYPES, Snapshot


@dataclass(frozen=True, slots=True)
class NackView:
    type: str  # LDS, RDS, CDS or EDS
    version: str
    message: str
    at_unix_s: float


@dataclass(frozen=True, slots=True)
class XdsClientView:
    node_id: str
    peer: str
    connected_at_unix_s: float
    # The last version ACKed, by type name (LDS, …).
    acked_versions: tuple[tuple[str, str], ...]
    pending_nacks: tuple[NackView, ...]
    in_sync: bool


@dataclass(frozen=True, slots=True)
class XdsView:
    address: str
    clients: tuple[XdsClientView, ...]
    pushes_total: int
    # The versions being served, by type name.
    versions: tuple[tuple[str, str], ...]


def client_view(client: ClientStatus, snapshot: Snapshot) -> XdsClientView:
    types = dict(client.types)  # copied: a scrape thread may read while the loop writes
    nacks = [(t, s.nack) for t, s in types.items() if s.nack is not None]
    return XdsClientView(
        node_id=client.node_id,
        peer=client.peer,
        connected_at_unix_s=client.connected_at_unix_s,
        acked_versions=tuple((TYPE_NAMES[t], types[t].acked_version) for t in TYPES if t in types),
        pending_nacks=tuple(
            NackView(TYPE_NAMES.get(t, t), n.version, n.message, n.at_unix_s) for t, n in nacks
        ),
        in_sync=client.in_sync(snapshot),
    )


def versions(snapshot: Snapshot) -> tuple[tuple[str, str], ...]:
    return tuple((TYPE_NAMES[t], snapshot.version(t)) for t in TYPES)
