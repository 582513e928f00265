from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndpointState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_STATE_UNSPECIFIED: _ClassVar[EndpointState]
    ENDPOINT_STATE_PENDING: _ClassVar[EndpointState]
    ENDPOINT_STATE_READY: _ClassVar[EndpointState]
    ENDPOINT_STATE_UNHEALTHY: _ClassVar[EndpointState]
    ENDPOINT_STATE_EJECTED: _ClassVar[EndpointState]
    ENDPOINT_STATE_DRAINING: _ClassVar[EndpointState]
    ENDPOINT_STATE_DRAINED: _ClassVar[EndpointState]
ENDPOINT_STATE_UNSPECIFIED: EndpointState
ENDPOINT_STATE_PENDING: EndpointState
ENDPOINT_STATE_READY: EndpointState
ENDPOINT_STATE_UNHEALTHY: EndpointState
ENDPOINT_STATE_EJECTED: EndpointState
ENDPOINT_STATE_DRAINING: EndpointState
ENDPOINT_STATE_DRAINED: EndpointState

class ListClustersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters",)
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[ClusterInfo]
    def __init__(self, clusters: _Optional[_Iterable[_Union[ClusterInfo, _Mapping]]] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("name", "policy", "endpoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: str
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointInfo]
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[EndpointInfo, _Mapping]]] = ...) -> None: ...

class EndpointInfo(_message.Message):
    __slots__ = ("endpoint_id", "address", "pod_name", "state", "weight")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    address: str
    pod_name: str
    state: EndpointState
    weight: int
    def __init__(self, endpoint_id: _Optional[str] = ..., address: _Optional[str] = ..., pod_name: _Optional[str] = ..., state: _Optional[_Union[EndpointState, str]] = ..., weight: _Optional[int] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("clusters",)
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, clusters: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchSnapshotsRequest(_message.Message):
    __slots__ = ("interval_ms", "clusters")
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    clusters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interval_ms: _Optional[int] = ..., clusters: _Optional[_Iterable[str]] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("balancer_id", "taken_at_unix_ms", "started_at_unix_ms", "latency_bounds_ms", "clusters", "connections", "messages_over_budget_total", "in_flight_message_bytes", "xds_address", "xds_clients", "xds_pushes_total", "xds_versions", "retries_total", "retries_succeeded_total", "retry_budget_exhausted_total", "upstream_addresses_complete")
    class XdsVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BALANCER_ID_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BOUNDS_MS_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_OVER_BUDGET_TOTAL_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    XDS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    XDS_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    XDS_PUSHES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    XDS_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRIES_SUCCEEDED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_EXHAUSTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_ADDRESSES_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    balancer_id: str
    taken_at_unix_ms: int
    started_at_unix_ms: int
    latency_bounds_ms: _containers.RepeatedScalarFieldContainer[float]
    clusters: _containers.RepeatedCompositeFieldContainer[ClusterSnapshot]
    connections: _containers.RepeatedCompositeFieldContainer[PeerConnections]
    messages_over_budget_total: int
    in_flight_message_bytes: int
    xds_address: str
    xds_clients: _containers.RepeatedCompositeFieldContainer[XdsClient]
    xds_pushes_total: int
    xds_versions: _containers.ScalarMap[str, str]
    retries_total: int
    retries_succeeded_total: int
    retry_budget_exhausted_total: int
    upstream_addresses_complete: bool
    def __init__(self, balancer_id: _Optional[str] = ..., taken_at_unix_ms: _Optional[int] = ..., started_at_unix_ms: _Optional[int] = ..., latency_bounds_ms: _Optional[_Iterable[float]] = ..., clusters: _Optional[_Iterable[_Union[ClusterSnapshot, _Mapping]]] = ..., connections: _Optional[_Iterable[_Union[PeerConnections, _Mapping]]] = ..., messages_over_budget_total: _Optional[int] = ..., in_flight_message_bytes: _Optional[int] = ..., xds_address: _Optional[str] = ..., xds_clients: _Optional[_Iterable[_Union[XdsClient, _Mapping]]] = ..., xds_pushes_total: _Optional[int] = ..., xds_versions: _Optional[_Mapping[str, str]] = ..., retries_total: _Optional[int] = ..., retries_succeeded_total: _Optional[int] = ..., retry_budget_exhausted_total: _Optional[int] = ..., upstream_addresses_complete: _Optional[bool] = ...) -> None: ...

class XdsClient(_message.Message):
    __slots__ = ("node_id", "peer", "connected_at_unix_ms", "acked_versions", "pending_nacks", "in_sync")
    class AckedVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_NACKS_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    peer: str
    connected_at_unix_ms: int
    acked_versions: _containers.ScalarMap[str, str]
    pending_nacks: _containers.RepeatedCompositeFieldContainer[XdsNack]
    in_sync: bool
    def __init__(self, node_id: _Optional[str] = ..., peer: _Optional[str] = ..., connected_at_unix_ms: _Optional[int] = ..., acked_versions: _Optional[_Mapping[str, str]] = ..., pending_nacks: _Optional[_Iterable[_Union[XdsNack, _Mapping]]] = ..., in_sync: _Optional[bool] = ...) -> None: ...

class XdsNack(_message.Message):
    __slots__ = ("type", "version", "message", "at_unix_ms")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    type: str
    version: str
    message: str
    at_unix_ms: int
    def __init__(self, type: _Optional[str] = ..., version: _Optional[str] = ..., message: _Optional[str] = ..., at_unix_ms: _Optional[int] = ...) -> None: ...

class ClusterSnapshot(_message.Message):
    __slots__ = ("name", "policy", "endpoints", "requests_total", "in_flight", "ready_endpoints", "default_weight", "configured_policy", "panic", "xds_clients", "xds_clients_in_sync", "xds_policy_fallback", "xds_client_peers", "retries_total", "retries_succeeded_total", "retry_budget_exhausted_total", "retry_budget_exhausted", "retries_not_safe_total", "share_basis")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    READY_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_POLICY_FIELD_NUMBER: _ClassVar[int]
    PANIC_FIELD_NUMBER: _ClassVar[int]
    XDS_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    XDS_CLIENTS_IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    XDS_POLICY_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    XDS_CLIENT_PEERS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRIES_SUCCEEDED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_EXHAUSTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    RETRIES_NOT_SAFE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHARE_BASIS_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: str
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointSnapshot]
    requests_total: int
    in_flight: int
    ready_endpoints: int
    default_weight: int
    configured_policy: str
    panic: bool
    xds_clients: int
    xds_clients_in_sync: int
    xds_policy_fallback: bool
    xds_client_peers: _containers.RepeatedScalarFieldContainer[str]
    retries_total: int
    retries_succeeded_total: int
    retry_budget_exhausted_total: int
    retry_budget_exhausted: bool
    retries_not_safe_total: int
    share_basis: str
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[EndpointSnapshot, _Mapping]]] = ..., requests_total: _Optional[int] = ..., in_flight: _Optional[int] = ..., ready_endpoints: _Optional[int] = ..., default_weight: _Optional[int] = ..., configured_policy: _Optional[str] = ..., panic: _Optional[bool] = ..., xds_clients: _Optional[int] = ..., xds_clients_in_sync: _Optional[int] = ..., xds_policy_fallback: _Optional[bool] = ..., xds_client_peers: _Optional[_Iterable[str]] = ..., retries_total: _Optional[int] = ..., retries_succeeded_total: _Optional[int] = ..., retry_budget_exhausted_total: _Optional[int] = ..., retry_budget_exhausted: _Optional[bool] = ..., retries_not_safe_total: _Optional[int] = ..., share_basis: _Optional[str] = ...) -> None: ...

class EndpointSnapshot(_message.Message):
    __slots__ = ("endpoint_id", "address", "pod_name", "state", "state_since_unix_ms", "drain_deadline_unix_ms", "removed", "weight", "effective_weight", "in_flight", "requests_by_code", "requests_total", "bytes_received", "bytes_sent", "latency", "ewma_latency_ms", "consecutive_failures", "ejections_total", "ejection_multiplier", "state_reason", "connectivity", "proxyless_requests_issued", "proxyless_requests_succeeded", "proxyless_requests_errored", "proxyless_in_flight", "xds_health_status", "retries_total", "retries_succeeded_total", "retry_budget_exhausted_total", "retries_not_safe_total", "slow_start_factor", "slow_start_ends_unix_ms", "expected_share", "load", "fast_failure_load", "latency_penalty", "last_ejected_unix_ms", "last_ejection_reason", "upstream_local_addresses")
    class RequestsByCodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_BY_CODE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    EWMA_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EJECTION_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    CONNECTIVITY_FIELD_NUMBER: _ClassVar[int]
    PROXYLESS_REQUESTS_ISSUED_FIELD_NUMBER: _ClassVar[int]
    PROXYLESS_REQUESTS_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PROXYLESS_REQUESTS_ERRORED_FIELD_NUMBER: _ClassVar[int]
    PROXYLESS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    XDS_HEALTH_STATUS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRIES_SUCCEEDED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_EXHAUSTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RETRIES_NOT_SAFE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SLOW_START_FACTOR_FIELD_NUMBER: _ClassVar[int]
    SLOW_START_ENDS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    FAST_FAILURE_LOAD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LAST_EJECTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_EJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_LOCAL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    address: str
    pod_name: str
    state: EndpointState
    state_since_unix_ms: int
    drain_deadline_unix_ms: int
    removed: bool
    weight: int
    effective_weight: float
    in_flight: int
    requests_by_code: _containers.ScalarMap[str, int]
    requests_total: int
    bytes_received: int
    bytes_sent: int
    latency: Histogram
    ewma_latency_ms: float
    consecutive_failures: int
    ejections_total: int
    ejection_multiplier: int
    state_reason: str
    connectivity: str
    proxyless_requests_issued: int
    proxyless_requests_succeeded: int
    proxyless_requests_errored: int
    proxyless_in_flight: int
    xds_health_status: str
    retries_total: int
    retries_succeeded_total: int
    retry_budget_exhausted_total: int
    retries_not_safe_total: int
    slow_start_factor: float
    slow_start_ends_unix_ms: int
    expected_share: float
    load: float
    fast_failure_load: float
    latency_penalty: float
    last_ejected_unix_ms: int
    last_ejection_reason: str
    upstream_local_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoint_id: _Optional[str] = ..., address: _Optional[str] = ..., pod_name: _Optional[str] = ..., state: _Optional[_Union[EndpointState, str]] = ..., state_since_unix_ms: _Optional[int] = ..., drain_deadline_unix_ms: _Optional[int] = ..., removed: _Optional[bool] = ..., weight: _Optional[int] = ..., effective_weight: _Optional[float] = ..., in_flight: _Optional[int] = ..., requests_by_code: _Optional[_Mapping[str, int]] = ..., requests_total: _Optional[int] = ..., bytes_received: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., latency: _Optional[_Union[Histogram, _Mapping]] = ..., ewma_latency_ms: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., ejections_total: _Optional[int] = ..., ejection_multiplier: _Optional[int] = ..., state_reason: _Optional[str] = ..., connectivity: _Optional[str] = ..., proxyless_requests_issued: _Optional[int] = ..., proxyless_requests_succeeded: _Optional[int] = ..., proxyless_requests_errored: _Optional[int] = ..., proxyless_in_flight: _Optional[int] = ..., xds_health_status: _Optional[str] = ..., retries_total: _Optional[int] = ..., retries_succeeded_total: _Optional[int] = ..., retry_budget_exhausted_total: _Optional[int] = ..., retries_not_safe_total: _Optional[int] = ..., slow_start_factor: _Optional[float] = ..., slow_start_ends_unix_ms: _Optional[int] = ..., expected_share: _Optional[float] = ..., load: _Optional[float] = ..., fast_failure_load: _Optional[float] = ..., latency_penalty: _Optional[float] = ..., last_ejected_unix_ms: _Optional[int] = ..., last_ejection_reason: _Optional[str] = ..., upstream_local_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("counts", "sum_ms", "count")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum_ms: float
    count: int
    def __init__(self, counts: _Optional[_Iterable[int]] = ..., sum_ms: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class PeerConnections(_message.Message):
    __slots__ = ("peer", "count")
    PEER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    peer: str
    count: int
    def __init__(self, peer: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class SetWeightRequest(_message.Message):
    __slots__ = ("cluster", "endpoint_id", "weight")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    endpoint_id: str
    weight: int
    def __init__(self, cluster: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("cluster", "endpoint_id", "timeout_ms")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    endpoint_id: str
    timeout_ms: int
    def __init__(self, cluster: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class UndrainRequest(_message.Message):
    __slots__ = ("cluster", "endpoint_id")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    endpoint_id: str
    def __init__(self, cluster: _Optional[str] = ..., endpoint_id: _Optional[str] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("cluster", "policy")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    policy: str
    def __init__(self, cluster: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...
