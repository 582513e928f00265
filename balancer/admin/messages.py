"""Views (`snapshot`) to the admin API's protobuf messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from balancer.admin.snapshot import BalancerView, ClusterView, EndpointView
from balancer.admin.v1 import admin_pb2
from balancer.endpoint import State
from balancer.stats import LATENCY_BOUNDS_MS

if TYPE_CHECKING:
    from balancer.xds.status import XdsView

STATE_MESSAGES: dict[State, admin_pb2.EndpointState] = {
    State.PENDING: admin_pb2.ENDPOINT_STATE_PENDING,
    State.READY: admin_pb2.ENDPOINT_STATE_READY,
    State.UNHEALTHY: admin_pb2.ENDPOINT_STATE_UNHEALTHY,
    State.EJECTED: admin_pb2.ENDPOINT_STATE_EJECTED,
    State.DRAINING: admin_pb2.ENDPOINT_STATE_DRAINING,
    State.DRAINED: admin_pb2.ENDPOINT_STATE_DRAINED,
}


def _unix_ms(unix_s: float) -> int:
    return round(unix_s * 1000)


def snapshot_message(view: BalancerView) -> admin_pb2.Snapshot:
    return admin_pb2.Snapshot(
        balancer_id=view.balancer_id,
        taken_at_unix_ms=_unix_ms(view.taken_at_unix_s),
        started_at_unix_ms=_unix_ms(view.started_at_unix_s),
        latency_bounds_ms=LATENCY_BOUNDS_MS,
        clusters=[cluster_message(c) for c in view.clusters],
        connections=[
            admin_pb2.PeerConnections(peer=peer, count=count) for peer, count in view.connections
        ],
        messages_over_budget_total=view.messages_over_budget_total,
        in_flight_message_bytes=view.in_flight_message_bytes,
        retries_total=view.retries.retries,
        retries_succeeded_total=view.retries.succeeded,
        retry_budget_exhausted_total=view.retries.budget_exhausted,
        upstream_addresses_complete=view.upstream_addresses_complete,
        **_xds_fields(view.xds),
    )


def _xds_fields(view: XdsView | None) -> dict[str, Any]:
    if view is None:
        return {}
    clients = [
        admin_pb2.XdsClient(
            node_id=c.node_id,
            peer=c.peer,
            connected_at_unix_ms=_unix_ms(c.connected_at_unix_s),
            acked_versions=dict(c.acked_versions),
            pending_nacks=[
                admin_pb2.XdsNack(
                    type=n.type,
                    version=n.version,
                    message=n.message,
                    at_unix_ms=_unix_ms(n.at_unix_s),
                )
                for n in c.pending_nacks
            ],
            in_sync=c.in_sync,
        )
        for c in view.clients
    ]
    return {
        "xds_address": view.address,
        "xds_clients": clients,
        "xds_pushes_total": view.pushes_total,
        "xds_versions": dict(view.versions),
    }


def cluster_message(view: ClusterView) -> admin_pb2.ClusterSnapshot:
    return admin_pb2.ClusterSnapshot(
        name=view.name,
        policy=view.policy,
        endpoints=[endpoint_message(ep) for ep in view.endpoints],
        requests_total=view.requests_total,
        in_flight=view.in_flight,
        ready_endpoints=view.ready_endpoints,
        default_weight=view.default_weight,
        configured_policy=view.configured_policy,
        panic=view.panic,
        xds_clients=view.xds_clients,
        xds_clients_in_sync=view.xds_clients_in_sync,
        xds_policy_fallback=view.xds_policy_fallback,
        xds_client_peers=view.xds_client_peers,
        retries_total=view.retries.retries,
        retries_succeeded_total=view.retries.succeeded,
        retry_budget_exhausted_total=view.retries.budget_exhausted,
        retry_budget_exhausted=view.retry_budget_exhausted,
        retries_not_safe_total=view.retries.not_safe,
        share_basis=view.share_basis,
    )


def endpoint_message(view: EndpointView) -> admin_pb2.EndpointSnapshot:
    deadline = view.drain_deadline_unix_s
    return admin_pb2.EndpointSnapshot(
        endpoint_id=view.endpoint_id,
        address=view.address,
        pod_name=view.pod_name or "",
        state=STATE_MESSAGES[view.state],
        state_since_unix_ms=_unix_ms(view.state_since_unix_s),
        drain_deadline_unix_ms=None if deadline is None else _unix_ms(deadline),
        removed=view.removed,
        weight=view.weight,
        effective_weight=view.effective_weight,
        in_flight=view.in_flight,
        requests_by_code=view.requests_by_code(),
        requests_total=view.requests_total,
        bytes_received=view.bytes_received,
        bytes_sent=view.bytes_sent,
        latency=admin_pb2.Histogram(
            counts=view.latency_counts,
            sum_ms=view.latency_sum_s * 1000,
            count=sum(view.latency_counts),
        ),
        ewma_latency_ms=view.ewma_latency_s * 1000,
        consecutive_failures=view.consecutive_failures,
        ejections_total=view.ejections_total,
        ejection_multiplier=view.ejection_multiplier,
        state_reason=view.state_reason,
        connectivity=view.connectivity,
        retries_total=view.retries.retries,
        retries_succeeded_total=view.retries.succeeded,
        retry_budget_exhausted_total=view.retries.budget_exhausted,
        retries_not_safe_total=view.retries.not_safe,
        upstream_local_addresses=view.upstream_local_addresses,
        **_proxyless_fields(view),
        **_why_fields(view),
    )


def _why_fields(view: EndpointView) -> dict[str, Any]:
    """Why the endpoint gets its share: admin.proto's fields 50 to 57."""
    ramp_end, ejected = view.slow_start_ends_unix_s, view.last_ejected_unix_s
    return {
        "slow_start_factor": view.slow_start_factor,
        "slow_start_ends_unix_ms": None if ramp_end is None else _unix_ms(ramp_end),
        "expected_share": view.expected_share,
        "load": view.load,
        "fast_failure_load": view.fast_failure_load,
        "latency_penalty": view.latency_penalty,
        "last_ejected_unix_ms": None if ejected is None else _unix_ms(ejected),
        "last_ejection_reason": view.last_ejection_reason,
    }


def _proxyless_fields(view: EndpointView) -> dict[str, Any]:
    counters = view.proxyless
    if counters is None:
        return {}
    return {
        "proxyless_requests_issued": counters.issued,
        "proxyless_requests_succeeded": counters.succeeded,
        "proxyless_requests_errored": counters.errored,
        "proxyless_in_flight": counters.in_progress,
        "xds_health_status": view.xds_health_status,
    }


def cluster_info(view: ClusterView) -> admin_pb2.ClusterInfo:
    return admin_pb2.ClusterInfo(
        name=view.name,
        policy=view.policy,
        endpoints=[
            admin_pb2.EndpointInfo(
                endpoint_id=ep.endpoint_id,
                address=ep.address,
                pod_name=ep.pod_name or "",
                state=STATE_MESSAGES[ep.state],
                weight=ep.weight,
            )
            for ep in view.endpoints
        ],
    )
