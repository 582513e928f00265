"""Why a pod gets its share, per balancer replica, from the replicas' latest snapshots.

The balancer says it (admin.proto `EndpointSnapshot` 50-57 beside state, weights,
in-flight, EWMA latency and ejections); this turns one endpoint of each replica's
snapshot into a plain dict for the REST API and the page's "why" panel, and sums it up
in one sentence. It is read on demand, not carried in every frame: the frames stay
small (about 400 bytes a pod), and a "why" is wanted for one pod at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from balancer.admin.v1 import admin_pb2
from dashboard.collector.rates import state_name

READY = "READY"


class ReplicaWhy(TypedDict):
    replica: str  # the balancer replica's id
    state: str  # READY, DRAINING, ...
    state_reason: str
    state_since: int  # unix ms
    weight: int  # the operator's
    slow_start_factor: float  # 1 unless ramping up
    slow_start_ends: int | None  # unix ms; null when not ramping
    effective_weight: float  # weight × slow start; 0 when not routed to
    expected_share: float  # 0..1 of the replica's new requests
    in_flight: int
    load: float  # what the policy compares (see admin.proto `load`)
    fast_failure_load: float
    ewma_latency_ms: float
    latency_penalty: float  # peak_ewma: ≥ 1, 1 for the fastest
    ejections_total: int
    ejection_multiplier: int
    last_ejected: int | None  # unix ms; null when never ejected
    last_ejection_reason: str


class PodWhy(TypedDict):
    pod: str
    policy: str
    share_basis: str  # "weights", or "weights at equal load" (least_request, peak_ewma)
    summary: str  # one sentence, from the first replica that knows the pod
    replicas: list[ReplicaWhy]


def explain_pod(
    snapshots: Mapping[str, admin_pb2.Snapshot | None], cluster: str, pod: str
) -> PodWhy | None:
    """`pod` of `cluster` as every replica that is up (its snapshot not None) sees it, in
    the order of `snapshots`; None when none of them has the endpoint."""
    found: list[tuple[admin_pb2.ClusterSnapshot, ReplicaWhy]] = []
    for replica, snapshot in snapshots.items():
        for c in snapshot.clusters if snapshot is not None else ():
            for ep in c.endpoints if c.name == cluster else ():
                if ep.endpoint_id == pod:
                    found.append((c, replica_why(replica, ep)))
    if not found:
        return None
    first_cluster, first = found[0]
    basis = first_cluster.share_basis or "weights"
    return {
        "pod": pod,
        "policy": first_cluster.policy,
        "share_basis": basis,
        "summary": summary(first, first_cluster.policy, basis),
        "replicas": [why for _, why in found],
    }


def known_pods(snapshots: Mapping[str, admin_pb2.Snapshot | None], cluster: str) -> list[str]:
    """The endpoint ids of `cluster` that any replica that is up has, sorted."""
    return sorted(
        {
            ep.endpoint_id
            for snapshot in snapshots.values()
            if snapshot is not None
            for c in snapshot.clusters
            if c.name == cluster
            for ep in c.endpoints
        }
    )


def replica_why(replica: str, ep: admin_pb2.EndpointSnapshot) -> ReplicaWhy:
    def optional(field: str) -> int | None:
        return int(getattr(ep, field)) if ep.HasField(field) else None

    return {
        "replica": replica,
        "state": state_name(ep.state),
        "state_reason": ep.state_reason,
        "state_since": ep.state_since_unix_ms,
        "weight": ep.weight,
        "slow_start_factor": round(ep.slow_start_factor, 4),
        "slow_start_ends": optional("slow_start_ends_unix_ms"),
        "effective_weight": round(ep.effective_weight, 2),
        "expected_share": round(ep.expected_share, 4),
        "in_flight": ep.in_flight,
        "load": round(ep.load, 3),
        "fast_failure_load": round(ep.fast_failure_load, 3),
        "ewma_latency_ms": round(ep.ewma_latency_ms, 3),
        "latency_penalty": round(ep.latency_penalty, 3),
        "ejections_total": ep.ejections_total,
        "ejection_multiplier": ep.ejection_multiplier,
        "last_ejected": optional("last_ejected_unix_ms"),
        "last_ejection_reason": ep.last_ejection_reason,
    }


def summary(why: ReplicaWhy, policy: str, basis: str) -> str:
    """Why the pod gets its share, in one sentence an operator can act on."""
    parts = [f"{why['state']} ({why['state_reason']})" if why["state_reason"] else why["state"]]
    if why["state"] != READY and why["expected_share"] == 0:
        parts.append("no new requests")
    else:
        weight = f"weight {why['weight']}"
        if why["slow_start_factor"] < 1:
            weight += f" × slow start {why['slow_start_factor']:.2f}"
        parts.append(f"{weight} = {why['effective_weight']:g}")
        parts.append(f"expected share {why['expected_share'] * 100:.1f} % ({policy}: by {basis})")
    parts.extend(_load_words(why, policy))
    if why["ejections_total"]:
        parts.append(
            f"ejected {why['ejections_total']}× (last: {why['last_ejection_reason'] or '?'})"
        )
    return "; ".join(parts)


def _load_words(why: ReplicaWhy, policy: str) -> list[str]:
    if policy == "least_request":
        return [f"load {why['load']:g} (in flight {why['in_flight']} + fast failures"
                f" {why['fast_failure_load']:g})"]  # fmt: skip
    if policy == "peak_ewma":
        words = [f"latency estimate {why['ewma_latency_ms']:.1f} ms"]
        if why["latency_penalty"] > 1:
            words.append(f"{why['latency_penalty']:.2f}× slower than the fastest: gets less")
        return words
    return [f"in flight {why['in_flight']}"]
