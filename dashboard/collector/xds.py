"""A service's proxyless clients in its frame: how many, on which version, who lags and why.

Each balancer replica serves its own xDS versions (a counter per resource type),
and each proxyless client follows one replica. A client is *on the served
version* when the endpoints (EDS) and cluster (CDS) versions it last ACKed are
the ones its replica serves now: a weight, drain or restart changes EDS, a
policy change CDS. The badge says "xDS clients: 3, all on version 12" (one
replica, or replicas that happen to serve the same number), "…, all on the
versions served (b1: 12, b2: 7)", or "2 of 3 on version 12; client X NACKed 12:
<its error>" — like the replicas' sync badge, for the clients.

Pure functions over admin snapshots; no Django, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from balancer.admin.v1 import admin_pb2
from dashboard.collector.frames import XdsFrame, XdsLagFrame

EDS = "EDS"
CDS = "CDS"
# Lagging clients named in a frame (the rest are counted): the frame stays small.
MAX_LAGGING = 3
MAX_NACK_CHARS = 160


def xds_frame(snapshots: Iterable[tuple[str, admin_pb2.Snapshot]], cluster: str) -> XdsFrame:
    """The cluster's proxyless clients over the given (replica id, snapshot) pairs.

    Counts always; `versions`, `lagging` and `label` only when every replica names
    its subscribed clients (`xds_client_peers`; an older balancer does not).
    """
    out: XdsFrame = {"clients": 0, "in_sync": 0, "fallback": False}
    versions: dict[str, str] = {}
    lagging: list[XdsLagFrame] = []
    detailed = True
    for replica_id, snapshot in snapshots:
        for c in snapshot.clusters:
            if c.name != cluster:
                continue
            out["fallback"] = out["fallback"] or c.xds_policy_fallback
            clients = _subscribed(snapshot, c)
            if len(clients) != c.xds_clients:  # not named: counts only
                detailed = False
                out["clients"] += c.xds_clients
                out["in_sync"] += c.xds_clients_in_sync
                continue
            served = dict(snapshot.xds_versions)
            versions[replica_id] = served.get(EDS, "")
            behind = [_lag(replica_id, x) for x in clients if not _on_served(x, served)]
            out["clients"] += len(clients)
            out["in_sync"] += len(clients) - len(behind)
            lagging += behind
    if detailed and out["clients"]:
        out["versions"] = versions
        out["lagging"] = sorted(lagging, key=lambda x: ("nack" not in x, x["node"]))[:MAX_LAGGING]
        out["label"] = xds_label(out)
    return out


def _subscribed(
    snapshot: admin_pb2.Snapshot, cluster: admin_pb2.ClusterSnapshot
) -> list[admin_pb2.XdsClient]:
    peers = set(cluster.xds_client_peers)
    return [x for x in snapshot.xds_clients if x.peer in peers]


def _on_served(client: admin_pb2.XdsClient, served: Mapping[str, str]) -> bool:
    """EDS ACKed as served, and CDS too when the client takes CDS (every gRPC client does)."""
    acked = client.acked_versions
    eds, cds = served.get(EDS), served.get(CDS)
    return acked.get(EDS) == eds and acked.get(CDS, cds) == cds


def _lag(replica_id: str, client: admin_pb2.XdsClient) -> XdsLagFrame:
    lag: XdsLagFrame = {
        "node": client.node_id or client.peer,
        "replica": replica_id,
        "version": client.acked_versions.get(EDS, ""),
    }
    nacks = sorted(client.pending_nacks, key=lambda n: n.at_unix_ms)
    if nacks:
        nack = nacks[-1]
        lag["nack"] = f"{nack.type} {nack.version}: {_one_line(nack.message)}"
    return lag


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= MAX_NACK_CHARS else text[: MAX_NACK_CHARS - 1] + "…"


def xds_label(xds: XdsFrame) -> str:
    """The badge's words; the frame must hold `versions` and `lagging` (see `xds_frame`)."""
    clients, in_sync = xds["clients"], xds["in_sync"]
    served = _served_words(xds.get("versions", {}))
    if in_sync == clients:
        text = f"xDS clients: {clients}, all on {served}"
    else:
        text = f"xDS clients: {in_sync} of {clients} on {served}"
        lagging = xds.get("lagging", [])
        text += "".join(f"; {_lag_words(x)}" for x in lagging)
        if clients - in_sync > len(lagging):
            text += f"; {clients - in_sync - len(lagging)} more behind"
    if xds["fallback"]:
        text += " (round robin: they cannot follow the policy)"
    return text


def _served_words(versions: Mapping[str, str]) -> str:
    distinct = set(versions.values())
    if len(distinct) == 1:
        return f"version {distinct.pop()}"
    listed = ", ".join(f"{r}: {v}" for r, v in sorted(versions.items()))
    return f"the versions served ({listed})"


def _lag_words(lag: XdsLagFrame) -> str:
    if "nack" in lag:
        return f"client {lag['node']} NACKed {lag['nack']}"
    acked = lag["version"] or "none yet"
    return f"client {lag['node']} on {acked}"
