"""xDS resources built from cluster state: plain functions, no I/O (go-control-plane's shape).

For each cluster `<name>` a proxyless gRPC client asks for, by dialling
`xds:///<name>`:

- LDS `<name>`: an ApiListener whose HTTP connection manager names the route
  configuration `<name>` (RDS over ADS) and ends with the router filter, as gRPC requires;
- RDS `<name>`: one virtual host for every authority, every path → cluster `<name>`;
- CDS `<name>`: an EDS cluster (endpoints over ADS) with the cluster's policy;
- EDS `<name>`: a ClusterLoadAssignment with every endpoint in a locality of its
  own, weighted by its effective weight. gRPC ignores per-endpoint weights under
  round robin, but honours locality weights, so one locality per endpoint is how
  Ballast's weights (and slow start's ramps) reach a proxyless client.

An endpoint the proxy would not pick (weight 0, DRAINING, DRAINED, UNHEALTHY,
EJECTED, PENDING) is sent with a health status other than HEALTHY, so the
client sends it no new calls while its calls in flight finish; its locality
keeps weight 1, because a client NACKs a locality or endpoint weight of 0.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from balancer.cluster import Cluster
from balancer.endpoint import Endpoint, State
from balancer.retries import RetryPolicy

log = logging.getLogger(__name__)

_TYPE_PREFIX = "type.googleapis.com/"
LISTENER = _TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
# The order a client needs them in; also the order a snapshot is built in.
TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
TYPE_NAMES = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS"}

# Ballast's policies a proxyless client can follow itself; the rest fall back.
HONOURED_POLICIES = ("round_robin",)
_DRAINING_STATES = (State.DRAINING, State.DRAINED)

Resources = Mapping[str, Message]  # resource name → resource


@dataclass(frozen=True)
class Snapshot:
    """One consistent set of resources, by type URL; `versions` per type URL."""

    resources: Mapping[str, Resources]
    versions: Mapping[str, str] = field(default_factory=dict)

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url, "")


def build_resources(clusters: Iterable[Cluster]) -> dict[str, dict[str, Message]]:
    """Every resource of every cluster, by type URL then name."""
    out: dict[str, dict[str, Message]] = {t: {} for t in TYPES}
    for cluster in clusters:
        out[LISTENER][cluster.name] = listener(cluster.name)
        out[ROUTE][cluster.name] = route_configuration(cluster.name, cluster.config.retry)
        out[CLUSTER][cluster.name] = xds_cluster(cluster.name)
        out[ENDPOINT][cluster.name] = load_assignment(cluster)
    return out


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def listener(name: str) -> listener_pb2.Listener:
    """LDS: the ApiListener a client dialling `xds:///<name>` asks for."""
    manager = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=name),
        http_filters=[
            hcm_pb2.HttpFilter(name="router", typed_config=_any(router_pb2.Router())),
        ],
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_any(manager))
    )


def route_configuration(
    name: str, retry: RetryPolicy | None = None
) -> route_pb2.RouteConfiguration:
    """RDS: every call to any authority goes to the cluster of the same name.

    With `retry`, the cluster's idempotent methods come first, each a route with the
    retry policy (gRPC A44); other methods get none: a proxyless client retries
    whatever its policy names once the endpoint answered, so only calls safe to
    repeat may have one (calls that never left the client it retries by itself).
    """
    catch_all = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=""),
        route=route_components_pb2.RouteAction(cluster=name),
    )
    routes = [*_retry_routes(name, retry), catch_all]
    host = route_components_pb2.VirtualHost(name=name, domains=["*"], routes=routes)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[host])


# The codes a proxyless gRPC client retries on (A44); it ignores any other name.
_A44_CODES = ("CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED", "UNAVAILABLE")


def _retry_routes(name: str, retry: RetryPolicy | None) -> list[route_components_pb2.Route]:
    """One route per idempotent method (`/pkg.Service/*`: the service's prefix) with the
    policy: codes, retries (attempts − 1) and A6's backoff; none when retries are off."""
    if retry is None or not retry.enabled:
        return []
    codes = [c.lower().replace("_", "-") for c in _A44_CODES if c in retry.retry_on]
    if not codes:
        return []
    policy = route_components_pb2.RetryPolicy(
        retry_on=",".join(codes),
        num_retries=wrappers_pb2.UInt32Value(value=retry.max_attempts - 1),
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=_duration(retry.initial_backoff_s),
            max_interval=_duration(retry.max_backoff_s),
        ),
    )
    return [
        route_components_pb2.Route(
            match=_method_match(method),
            route=route_components_pb2.RouteAction(cluster=name, retry_policy=policy),
        )
        for method in sorted(retry.idempotent_methods)
    ]


def _method_match(method: str) -> route_components_pb2.RouteMatch:
    if method.endswith("/*"):
        return route_components_pb2.RouteMatch(prefix=method[:-1])
    return route_components_pb2.RouteMatch(path=method)


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def xds_cluster(name: str) -> cluster_pb2.Cluster:
    """CDS: endpoints come over ADS; round robin across localities weighted by weight;
    load reports (LRS) to this same server.

    Every policy is sent as round robin: with one endpoint per locality, the locality
    weights decide, and least_request, peak_ewma and random cannot be expressed (a
    warning says so where the snapshot is built).
    """
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.DiscoveryType.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads(), service_name=name
        ),
        lb_policy=cluster_pb2.Cluster.LbPolicy.ROUND_ROBIN,
        lrs_server=config_source_pb2.ConfigSource(self=config_source_pb2.SelfConfigSource()),
    )


def load_assignment(cluster: Cluster) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS: one locality per endpoint (sub_zone = endpoint id), weighted by effective weight.

    Endpoints known by a host name are left out (see `unsendable`): a client NACKs a
    whole assignment with one address that is not an IP.
    """
    endpoints = sorted(
        (ep for ep in cluster.endpoints.values() if _is_ip(ep.address.host)), key=lambda ep: ep.id
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster.name, endpoints=[_locality(ep) for ep in endpoints]
    )


def _locality(ep: Endpoint) -> endpoint_components_pb2.LocalityLbEndpoints:
    socket = address_pb2.SocketAddress(address=ep.address.host, port_value=ep.address.port)
    lb_endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=socket)
        ),
        health_status=health_status(ep),
    )
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(sub_zone=ep.id),
        lb_endpoints=[lb_endpoint],
        load_balancing_weight=wrappers_pb2.UInt32Value(value=locality_weight(ep)),
    )


def unsendable(cluster: Cluster) -> list[str]:
    """Ids of the endpoints left out of EDS: their address is a host name, not an IP."""
    return sorted(ep.id for ep in cluster.endpoints.values() if not _is_ip(ep.address.host))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def health_status(ep: Endpoint) -> health_check_pb2.HealthStatus.ValueType:
    """HEALTHY exactly when the proxy's picker would pick it (effective weight > 0).

    Drained or weight 0 → DRAINING; anything else out of service → UNHEALTHY. In
    panic the cluster gives unhealthy endpoints a weight, so they are HEALTHY here too.
    """
    if ep.effective_weight > 0:
        return health_check_pb2.HealthStatus.HEALTHY
    if ep.state in _DRAINING_STATES or ep.state is State.READY:
        return health_check_pb2.HealthStatus.DRAINING
    return health_check_pb2.HealthStatus.UNHEALTHY


def locality_weight(ep: Endpoint) -> int:
    """The effective weight rounded, at least 1 (a client NACKs 0; unpicked ones are not
    HEALTHY anyway)."""
    return max(1, round(ep.effective_weight))


def fallback_policy_warning(cluster: Cluster) -> str | None:
    """The warning for a policy proxyless clients cannot follow; None when they can."""
    if cluster.policy in HONOURED_POLICIES:
        return None
    return (
        f"cluster {cluster.name}: policy {cluster.policy} cannot be sent to proxyless gRPC"
        " clients; they balance by weighted round robin (weights, drain and health still apply)"
    )
