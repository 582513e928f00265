"""Balancer configuration: typed, frozen, validated; built from one TOML file.

Every dataclass validates itself in `__post_init__`; `load_config` reads the
TOML, names the key of any problem (`clusters[1].policy: …`) and rejects
unknown keys, so a typo fails at start instead of being silently ignored.
The environment is read only here, at the edge (`admin.token_env`).
"""

from __future__ import annotations

import difflib
import math
import ssl
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from balancer.endpoint import DEFAULT_WEIGHT, Address, check_weight
from balancer.picker import POLICIES
from balancer.retries import RetryPolicy
from balancer.tls import ClientTls, ServerTls, is_loopback

# gRPC's own default: a larger limit lets each caller make the balancer hold that much.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# gRPC channel arguments are C ints: a larger limit fails at start with OverflowError.
MAX_MESSAGE_BYTES_CAP = 2**31 - 1
# 32 messages of the default limit at once. Each held message costs about two copies
# (Core's buffer and Python's bytes), so messages stay within ~256 MiB of memory, while
# the hop's CPU (a few hundred MiB/s) is the bottleneck long before this budget is.
DEFAULT_MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024
# Streams one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
# RFC 9113 suggests no less than 100, Envoy's edge-proxy guidance uses 100): a client past it
# waits on its own side, so one client's flood of streams cannot take the balancer from the
# others. Core may refuse a stream that races a just-finished one (REFUSED_STREAM).
DEFAULT_MAX_CONCURRENT_STREAMS = 100
# gRPC takes connection ages in milliseconds as a C int: about 24.8 days at most.
MAX_CONNECTION_AGE_S_CAP = (2**31 - 1) // 1000
MIN_TOKEN_CHARS = 16
DEFAULT_TOKEN_ENV = "BALLAST_ADMIN_TOKEN"
DEFAULT_CONTROL_TOKEN_ENV = "BALLAST_CONTROL_TOKEN"
DEFAULT_XDS_TOKEN_ENV = "BALLAST_XDS_TOKEN"
EVENT_LOOPS = ("uvloop", "asyncio")
DISCOVERY_KINDS = ("static", "platform", "kubernetes")
_STATUS_NAMES = {code.name for code in grpc.StatusCode}


class ConfigError(ValueError):
    """A configuration problem; the message names the key and says what to do."""


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value}")


def parse_address(address: str) -> tuple[str, int]:
    """Splits `host:port` (or `[v6]:port`); raises ValueError naming the problem."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port (for example 127.0.0.1:50051)")
    bracketed = host.startswith("[") and host.endswith("]")
    if ":" in host and not bracketed:
        # gRPC reads `::1:443` as host `::1:443` on its default port, not port 443.
        raise ValueError(f"{address!r}: an IPv6 address needs brackets: write [{host}]:{port}")
    return host.strip("[]"), int(port)


def check_token(token: str, source: str) -> None:
    """Refuses a blank or trivially guessable admin token; `source` names where it came from."""
    if not token.strip():
        raise ValueError(f"{source}: the admin token is blank: use at least 16 random characters")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"{source}: the admin token is too short ({len(token)} characters):"
            f" use at least {MIN_TOKEN_CHARS} random characters"
        )
    if len(set(token)) < 4 or token != token.strip():
        raise ValueError(
            f"{source}: the admin token is trivially weak (repeated characters or surrounding"
            " spaces): use random characters, e.g. python3 -c 'import secrets;"
            " print(secrets.token_urlsafe(24))'"
        )


@dataclass(frozen=True)
class HealthCheckConfig:
    """Active grpc.health.v1 checks. Disabled: discovered endpoints are READY at once."""

    enabled: bool = False
    interval_s: float = 5.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 1
    service: str = ""

    def __post_init__(self) -> None:
        _positive("interval_s", self.interval_s)
        _positive("timeout_s", self.timeout_s)
        if self.unhealthy_threshold < 1 or self.healthy_threshold < 1:
            raise ValueError("unhealthy_threshold and healthy_threshold must be at least 1")


@dataclass(frozen=True)
class OutlierDetectionConfig:
    """Passive ejection on consecutive failures; defaults are Envoy's."""

    enabled: bool = True
    consecutive_failures: int = 5
    interval_s: float = 10.0
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: float = 10.0
    failure_codes: frozenset[str] = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DATA_LOSS"})

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        _positive("interval_s", self.interval_s)
        _positive("base_ejection_s", self.base_ejection_s)
        if self.max_ejection_s < self.base_ejection_s:
            raise ValueError("max_ejection_s must be at least base_ejection_s")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be between 0 and 100")
        if unknown := sorted(self.failure_codes - _STATUS_NAMES):
            raise ValueError(f"failure_codes: unknown status code(s) {', '.join(unknown)}")


@dataclass(frozen=True)
class SlowStartConfig:
    """Envoy's slow start; `window_s` 0 turns it off."""

    window_s: float = 0.0
    aggression: float = 1.0
    min_weight_percent: float = 10.0

    def __post_init__(self) -> None:
        if self.window_s < 0:
            raise ValueError("window_s must be 0 (off) or positive")
        _positive("aggression", self.aggression)
        if not 0 < self.min_weight_percent <= 100:
            raise ValueError("min_weight_percent must be in (0, 100]")


@dataclass(frozen=True)
class PeakEwmaConfig:
    """Peak EWMA's prior, decay and fast-failure penalty (linkerd's), and a noise tolerance.

    `tolerance`: latency costs within this fraction of each other count as equal.
    The estimate jumps to every slow response and takes seconds to come down, so
    on a busy machine equal pods look up to twice as slow as each other in turn;
    comparing them strictly starved whichever caught the last spike (measured in
    bench/balance_quality.py: shares off by 0.04 at weights 1:2:5, and the busiest
    equal pod 1.7× the mean). A pod 10× slower is still avoided.
    """

    default_rtt_ms: float = 30.0
    decay_s: float = 10.0
    failure_penalty_ms: float = 5_000.0
    tolerance: float = 0.5
    # How fast a peak's excess over the average fades, and the most one answer counts in the
    # average (× the average; 0: no cap): one slow answer must not cost an equal pod seconds
    # of traffic (PeakEwma). peak_decay_s ≥ decay_s and outlier_cap 0: linkerd's estimate.
    peak_decay_s: float = 0.1
    outlier_cap: float = 2.0

    def __post_init__(self) -> None:
        # A floor on the prior: a tiny one makes a new endpoint look free and floods it.
        if self.default_rtt_ms < 1:
            raise ValueError("default_rtt_ms must be at least 1 ms")
        _positive("decay_s", self.decay_s)
        if self.failure_penalty_ms < 0:
            raise ValueError("failure_penalty_ms must not be negative")
        if not 0 <= self.tolerance <= 10:
            raise ValueError("tolerance must be between 0 and 10 (a fraction: 0.5 is 50 %)")
        _positive("peak_decay_s", self.peak_decay_s)
        if not (self.outlier_cap == 0 or 1 <= self.outlier_cap <= 1000):
            raise ValueError("outlier_cap must be 0 (no cap) or between 1 and 1000 (× the average)")


@dataclass(frozen=True)
class DiscoveryConfig:
    """Where a cluster's endpoints come from.

    `static`: the `endpoints` list. `platform`: the pods of `service` on the
    platform the embedding process hands the balancer (the demo scene's local
    platform); `python -m balancer` alone has none. `kubernetes`: the EndpointSlices
    of the Service `service` (`name` or `namespace/name`) in `namespace` (default:
    the kubeconfig context's, or the pod's own in a cluster), endpoints on `port`
    (a port name of the Service, or a number; default: its only port or `grpc`).
    """

    kind: str = "static"
    endpoints: tuple[Address, ...] = ()
    service: str | None = None
    namespace: str | None = None
    port: int | str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DISCOVERY_KINDS:
            raise ValueError(
                f"kind {self.kind!r} is unknown: use one of {', '.join(DISCOVERY_KINDS)}"
            )
        if self.kind in ("platform", "kubernetes") and not self.service:
            raise ValueError(f'kind {self.kind!r} needs service = "<the service\'s name>"')
        if self.kind in ("platform", "kubernetes") and self.endpoints:
            raise ValueError(f"endpoints are for kind 'static'; kind {self.kind!r} discovers them")
        if self.kind != "kubernetes" and (self.namespace is not None or self.port is not None):
            raise ValueError("namespace and port are for kind 'kubernetes'")
        if self.kind == "kubernetes":
            self._check_kubernetes()
        ids = [a.endpoint_id for a in self.endpoints]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"endpoints: duplicate endpoint {', '.join(dupes)}")

    def _check_kubernetes(self) -> None:
        service = str(self.service)
        namespace, sep, name = service.rpartition("/")
        if sep and (not namespace or not name or "/" in namespace):
            raise ValueError(f"service {service!r}: use 'name' or 'namespace/name'")
        if sep and self.namespace is not None:
            raise ValueError(f"service {service!r} names its namespace: leave out namespace")
        if self.namespace is not None and not self.namespace.strip():
            raise ValueError("namespace must not be blank")
        if isinstance(self.port, int) and not 0 < self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range: use 1 to 65535 or a port name")
        if isinstance(self.port, str) and (not self.port or " " in self.port):
            raise ValueError(f"port {self.port!r}: give the Service's port name or a number")


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    policy: str = "round_robin"
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    health_check: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    outlier_detection: OutlierDetectionConfig = field(default_factory=OutlierDetectionConfig)
    slow_start: SlowStartConfig = field(default_factory=SlowStartConfig)
    peak_ewma: PeakEwmaConfig = field(default_factory=PeakEwmaConfig)
    default_weight: int = DEFAULT_WEIGHT
    # Methods known to be unary take the faster unary path; others stream.
    unary_methods: frozenset[str] = frozenset()
    discover_unary_methods: bool = True
    drain_timeout_s: float | None = None
    # Endpoints reached over TLS when set; plaintext (h2c) otherwise.
    tls: ClientTls | None = None
    # Envoy's panic threshold: below this share of READY endpoints (of those not
    # drained and not PENDING), route to all of them that can connect; 0 turns it off.
    panic_threshold_percent: float = 50.0
    # `[clusters.retry]`: what the embedded proxy retries, and what HAProxy and xDS get of it.
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if self.policy not in POLICIES:
            raise ValueError(f"policy {self.policy!r} is unknown: use one of {', '.join(POLICIES)}")
        try:
            check_weight(self.default_weight)
        except ValueError as err:
            raise ValueError(f"default_weight: {err}") from None
        for method in self.unary_methods:
            if not (method.startswith("/") and method.count("/") == 2):
                raise ValueError(f"unary_methods: {method!r} is not /package.Service/Method")
        if self.drain_timeout_s is not None:
            _positive("drain_timeout_s", self.drain_timeout_s)
        if not 0 <= self.panic_threshold_percent <= 100:
            raise ValueError(
                f"panic_threshold_percent must be between 0 (off) and 100,"
                f" got {self.panic_threshold_percent}"
            )


@dataclass(frozen=True)
class Route:
    """Sends methods of one gRPC `service` (`pkg.Service`) or a path `prefix` to `cluster`."""

    cluster: str
    service: str | None = None
    prefix: str | None = None
    # `[routing.routes.retry]`: this route's methods retry so, instead of the cluster's policy.
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if (self.service is None) == (self.prefix is None):
            raise ValueError("set exactly one of service or prefix")
        if self.prefix is not None and not self.prefix.startswith("/"):
            raise ValueError(f"prefix {self.prefix!r} must start with '/'")

    @property
    def path_prefix(self) -> str:
        return f"/{self.service}/" if self.service is not None else str(self.prefix)


@dataclass(frozen=True)
class ListenerConfig:
    address: str
    tls: ServerTls | None = None

    def __post_init__(self) -> None:
        parse_address(self.address)


@dataclass(frozen=True)
class AdminConfig:
    """The admin gRPC API (token required) and an optional Prometheus endpoint."""

    enabled: bool = True
    address: str = "127.0.0.1:9901"
    token: str | None = None
    metrics_address: str | None = None
    # Serves both the admin API and the metrics port over TLS when set.
    tls: ServerTls | None = None

    def __post_init__(self) -> None:
        parse_address(self.address)
        if self.metrics_address is not None:
            parse_address(self.metrics_address)
        if self.enabled and not self.token:
            raise ValueError(
                f"the admin API needs a bearer token: set {DEFAULT_TOKEN_ENV} (or the variable"
                " named by admin.token_env), or admin.token, or admin.enabled = false"
            )
        if self.token is not None:
            check_token(self.token, "token")


@dataclass(frozen=True)
class XdsConfig:
    """The xDS server proxyless gRPC clients balance from (ADS on its own port).

    Without a token it must listen on a loopback address: anything that can reach
    it learns every endpoint. With a token, calls need `authorization: Bearer <token>`.
    """

    address: str = "127.0.0.1:18000"
    token: str | None = field(default=None, repr=False)  # a secret: kept out of logs
    tls: ServerTls | None = None
    # How often proxyless clients send load reports (LRS), per-pod calls they made.
    load_report_interval_s: float = 1.0

    def __post_init__(self) -> None:
        _positive("load_report_interval_s", self.load_report_interval_s)
        host, _ = parse_address(self.address)
        if self.token is None and not is_loopback(host):
            raise ValueError(
                f"address {self.address!r} is not a loopback address and the xDS server has no"
                f" token: set {DEFAULT_XDS_TOKEN_ENV} (or the variable named by xds.token_env),"
                " or xds.token, or listen on 127.0.0.1"
            )
        if self.token is not None:
            check_token(self.token, "token")


@dataclass(frozen=True)
class ControlPlaneConfig:
    """The dashboard this replica fetches the desired state from before it serves.

    `url` is the dashboard's base URL (http or https); `token` an API token of the
    dashboard (a viewer's will do), read from the variable `token_env` unless set here.
    Start waits up to `initial_fetch_timeout_s` for the answer (Envoy's
    initial_fetch_timeout, 15 s), then serves the config file's state. `ca_file`: the
    CA bundle an https dashboard's certificate is checked against (default: the system's).
    """

    url: str
    token: str | None = field(default=None, repr=False)  # a secret: kept out of logs
    token_env: str = DEFAULT_CONTROL_TOKEN_ENV
    initial_fetch_timeout_s: float = 15.0
    ca_file: str | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url {self.url!r} is not the dashboard's base URL: use http(s)://host[:port]"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"url {self.url!r}: give the base URL, without ?query or #fragment")
        if not self.token or not self.token.strip():
            raise ValueError(
                f"the control plane needs an API token of the dashboard: set {self.token_env}"
                " (manage.py apitoken create --user <a viewer>), or control_plane.token"
            )
        _positive("initial_fetch_timeout_s", self.initial_fetch_timeout_s)
        if self.ca_file is not None:
            if parts.scheme != "https":
                raise ValueError("ca_file is for an https url; this url is http")
            _check_ca_file(self.ca_file)


def _check_ca_file(path: str) -> None:
    """Raises ValueError naming the problem when `path` is not a loadable CA bundle."""
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ValueError(f"ca_file {path!r}: no such file") from None
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"ca_file {path!r}: not a PEM CA bundle ({err})") from None


ENGINES = ("embedded", "haproxy")
_MAX_HAPROXY_THREADS = 64
# HAProxy's limits are C ints.
_MAX_HAPROXY_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class HaproxyConfig:
    """The `[haproxy]` table: how the HAProxy engine runs its child process.

    `threads` 0 lets HAProxy pick (one per CPU); `runtime_socket` "" puts the
    runtime API's unix socket in a private temporary directory; `global_lines` and
    `defaults_lines` are appended verbatim to the generated `global` and
    `defaults` sections (tuning the generated config does not cover).

    Limits (0: none): `max_connections` (HAProxy's `maxconn`: client connections
    at once, over all listeners), `max_connections_per_peer` (client connections
    from one IP address; more are refused at accept), `max_streams_per_server`
    (calls in flight on one endpoint; more wait in HAProxy's queue for up to
    `queue_timeout_s`, then fail with UNAVAILABLE).
    """

    binary: str = "haproxy"
    threads: int = 0
    runtime_socket: str = ""
    global_lines: tuple[str, ...] = ()
    defaults_lines: tuple[str, ...] = ()
    max_connections: int = 0
    max_connections_per_peer: int = 0
    max_streams_per_server: int = 0
    queue_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        self._check_limits()
        if not self.binary:
            raise ValueError("binary must not be empty: a path or a name found on PATH")
        if not 0 <= self.threads <= _MAX_HAPROXY_THREADS:
            raise ValueError(
                f"threads must be between 0 (HAProxy picks) and {_MAX_HAPROXY_THREADS},"
                f" got {self.threads}"
            )
        for name in ("global_lines", "defaults_lines"):
            for i, line in enumerate(getattr(self, name)):
                if "\n" in line or "\r" in line:
                    raise ValueError(f"{name}[{i}]: one config line per string, without newlines")

    def _check_limits(self) -> None:
        for name in ("max_connections", "max_connections_per_peer", "max_streams_per_server"):
            value = getattr(self, name)
            if not 0 <= value <= _MAX_HAPROXY_LIMIT:
                raise ValueError(
                    f"{name} must be between 0 (no limit) and {_MAX_HAPROXY_LIMIT}, got {value}"
                )
        if not (math.isfinite(self.queue_timeout_s) and 0.001 <= self.queue_timeout_s <= 86400):
            raise ValueError(
                "queue_timeout_s must be between 0.001 and 86400 seconds,"
                f" got {self.queue_timeout_s}"
            )


@dataclass(frozen=True)
class BalancerConfig:
    clusters: tuple[ClusterConfig, ...]
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig("127.0.0.1:50051"),)
    routes: tuple[Route, ...] = ()
    default_cluster: str | None = None
    admin: AdminConfig = field(default_factory=lambda: AdminConfig(enabled=False))
    # None: serve the config file's state from the start (no dashboard asked).
    control_plane: ControlPlaneConfig | None = None
    # None: no xDS server (no [xds] table, or xds.enabled = false).
    xds: XdsConfig | None = None
    id: str = "balancer"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    record_stats: bool = True
    shutdown_grace_s: float = 10.0
    # uvloop takes ~8 % off the proxy's CPU per call (bench/proxy_overhead.py).
    event_loop: str = "uvloop"
    # GOAWAY to client connections this old (±10 %, gRPC's own jitter; None: never), so
    # clients reconnect and, behind an L4 Service, spread over the replicas (gRPC A9).
    max_connection_age_s: float | None = None
    # After the GOAWAY, how long calls in flight get before the connection is closed
    # (None: as long as they take, gRPC's default; only with max_connection_age_s).
    max_connection_age_grace_s: float | None = None
    # What carries the calls: Ballast's own proxy, or a supervised HAProxy child.
    engine: str = "embedded"
    haproxy: HaproxyConfig = field(default_factory=HaproxyConfig)

    def __post_init__(self) -> None:
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"event_loop {self.event_loop!r}: use one of {', '.join(EVENT_LOOPS)}")
        if not self.clusters:
            raise ValueError("clusters: define at least one [[clusters]] table")
        if not self.listeners:
            raise ValueError("listeners: define at least one [[listeners]] table")
        names = [c.name for c in self.clusters]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"clusters: duplicate cluster name {', '.join(dupes)}")
        for i, route in enumerate(self.routes):
            if route.cluster not in names:
                raise ValueError(
                    f"routing.routes[{i}].cluster: no cluster named {route.cluster!r}"
                    f" (clusters: {', '.join(names)})"
                )
        if self.default_cluster is not None and self.default_cluster not in names:
            raise ValueError(
                f"routing.default_cluster: no cluster named {self.default_cluster!r}"
                f" (clusters: {', '.join(names)})"
            )
        self._check_limits()
        self._check_connection_age()
        self._check_engine()
        if not (self.shutdown_grace_s >= 0 and math.isfinite(self.shutdown_grace_s)):
            raise ValueError(
                f"shutdown_grace_s must be 0 or a positive number, got {self.shutdown_grace_s}"
            )

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"balancer.engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.engine != "haproxy":
            return
        for i, cluster in enumerate(self.clusters):
            # HAProxy checks a server certificate's DNS names only (never its IP SANs), and
            # endpoints are mostly pod IPs: without a name it would check the chain alone.
            if cluster.tls is not None and cluster.tls.server_name is None:
                raise ValueError(
                    f"clusters[{i}].tls.server_name: needed with balancer.engine = 'haproxy'"
                    " (HAProxy checks the endpoints' certificates by DNS name, not IP address):"
                    " set it to a name the pods' certificates carry"
                )

    def _check_limits(self) -> None:
        if not 0 < self.max_message_bytes <= MAX_MESSAGE_BYTES_CAP:
            raise ValueError(
                f"balancer.max_message_bytes must be between 1 and {MAX_MESSAGE_BYTES_CAP} (2^31-1,"
                f" gRPC's largest), got {self.max_message_bytes}"
            )
        if self.max_in_flight_bytes < self.max_message_bytes:
            raise ValueError(
                f"balancer.max_in_flight_bytes ({self.max_in_flight_bytes}) must be at least"
                f" balancer.max_message_bytes ({self.max_message_bytes}),"
                " or no message of the largest size could pass"
            )
        if not 0 < self.max_concurrent_streams <= MAX_MESSAGE_BYTES_CAP:
            raise ValueError(
                f"balancer.max_concurrent_streams must be between 1 and {MAX_MESSAGE_BYTES_CAP},"
                f" got {self.max_concurrent_streams}"
            )

    def _check_connection_age(self) -> None:
        for name in ("max_connection_age_s", "max_connection_age_grace_s"):
            value = getattr(self, name)
            if value is not None and not (
                math.isfinite(value) and 0 < value <= MAX_CONNECTION_AGE_S_CAP
            ):
                raise ValueError(
                    f"balancer.{name} must be a positive number of seconds, at most"
                    f" {MAX_CONNECTION_AGE_S_CAP} (gRPC's largest), got {value}"
                )
        if self.max_connection_age_grace_s is not None and self.max_connection_age_s is None:
            raise ValueError(
                "balancer.max_connection_age_grace_s is the grace after max_connection_age_s:"
                " set max_connection_age_s too, or remove it"
            )

    def cluster(self, name: str) -> ClusterConfig:
        return next(c for c in self.clusters if c.name == name)


# --- TOML reading -------------------------------------------------------------------------

T = TypeVar("T")


class _Table:
    """Reads typed values from one TOML table, tracking the key path for messages."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self._data = data
        self._path = path
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any = None) -> Any:
        self._used.add(name)
        if name not in self._data:
            return default
        value = self._data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self.key(name)}: expected a finite number, got {value!r}")
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self.key(name)}: expected {_kind_name(kinds)}, got {value!r}")
        return value

    def table(self, name: str) -> _Table:
        return _Table(self.get(name, dict, {}), self.key(name))

    def strings(self, name: str) -> list[str] | None:
        """A list of strings, or None when absent."""
        values: list[object] | None = self.get(name, list)
        if values is None:
            return None
        strings: list[str] = []
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a string, got {value!r}")
            strings.append(value)
        return strings

    def tables(self, name: str) -> Iterator[_Table]:
        for i, item in enumerate(self.get(name, list, [])):
            if not isinstance(item, dict):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a table, got {item!r}")
            yield _Table(item, f"{self.key(name)}[{i}]")

    def check_unknown(self) -> None:
        for name in self._data:
            if name not in self._used:
                hint = difflib.get_close_matches(name, self._used, n=1)
                did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ConfigError(f"{self.key(name)}: unknown key{did_you_mean}")

    @contextmanager
    def building(self) -> Iterator[None]:
        """Turns a dataclass's ValueError into a ConfigError that names this table."""
        try:
            yield
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{self._path or 'config'}: {err}") from None
        self.check_unknown()


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(names.get(k, f"a {k.__name__}") for k in kinds)


def _build(table: _Table, cls: Callable[..., T], fields: Mapping[str, Any]) -> T:
    """Builds `cls` from the fields present in the table (absent → the dataclass default)."""
    with table.building():
        return cls(**{k: v for k, v in fields.items() if v is not None})
    raise AssertionError("unreachable")  # pragma: no cover — `building` re-raises


def _addresses(table: _Table) -> tuple[Address, ...]:
    result = []
    for i, item in enumerate(table.get("endpoints", list, [])):
        key = f"{table.key('endpoints')}[{i}]"
        try:
            if isinstance(item, str):
                result.append(Address(*parse_address(item)))
            elif _is_endpoint_table(item):
                name = item.get("name")
                result.append(Address(*parse_address(item["address"]), pod_name=name))
            else:
                raise ValueError('use "host:port" or {address = "host:port", name = "pod"}')
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
    return tuple(result)


def _is_endpoint_table(item: object) -> bool:
    return (
        isinstance(item, dict)
        and set(item) <= {"address", "name"}
        and isinstance(item.get("address"), str)
        and isinstance(item.get("name", ""), str)
    )


def _cluster(t: _Table) -> ClusterConfig:
    d, hc, od, ss, pe = (t.table(k) for k in ("discovery", "health_check", "outlier_detection",
                                                "slow_start", "peak_ewma"))  # fmt: skip
    discovery = _build(d, DiscoveryConfig, {"kind": d.get("kind", str),
        "endpoints": _addresses(d), "service": d.get("service", str),
        "namespace": d.get("namespace", str), "port": d.get("port", (int, str))})  # fmt: skip
    health = _build(hc, HealthCheckConfig, {k: hc.get(k, kind) for k, kind in (
        ("enabled", bool), ("interval_s", float), ("timeout_s", float),
        ("unhealthy_threshold", int), ("healthy_threshold", int), ("service", str))})  # fmt: skip
    codes = od.strings("failure_codes")
    outlier = _build(od, OutlierDetectionConfig, {
        **{k: od.get(k, kind) for k, kind in (
            ("enabled", bool), ("consecutive_failures", int), ("interval_s", float),
            ("base_ejection_s", float), ("max_ejection_s", float),
            ("max_ejection_percent", float))},
        "failure_codes": frozenset(codes) if codes is not None else None})  # fmt: skip
    slow = _build(ss, SlowStartConfig, {k: ss.get(k, float) for k in (
        "window_s", "aggression", "min_weight_percent")})  # fmt: skip
    ewma = _build(pe, PeakEwmaConfig, {k: pe.get(k, float) for k in (
        "default_rtt_ms", "decay_s", "failure_penalty_ms", "tolerance",
        "peak_decay_s", "outlier_cap")})  # fmt: skip
    unary = t.strings("unary_methods")
    tls = _client_tls(t)
    retry = _retry(t.table("retry")) if t.get("retry", dict) is not None else None
    return _build(t, ClusterConfig, {
        "name": t.get("name", str, ""), "policy": t.get("policy", str),
        "discovery": discovery, "health_check": health, "outlier_detection": outlier,
        "slow_start": slow, "peak_ewma": ewma, "default_weight": t.get("default_weight", int),
        "unary_methods": frozenset(unary) if unary is not None else None,
        "discover_unary_methods": t.get("discover_unary_methods", bool),
        "drain_timeout_s": t.get("drain_timeout_s", float), "tls": tls,
        "panic_threshold_percent": t.get("panic_threshold_percent", float),
        "retry": retry})  # fmt: skip


def _retry(t: _Table) -> RetryPolicy:
    """A `retry` sub-table of a cluster or a route."""
    codes, methods = t.strings("retry_on"), t.strings("idempotent_methods")
    return _build(t, RetryPolicy, {
        **{k: t.get(k, float) for k in (
            "per_try_timeout_s", "initial_backoff_s", "max_backoff_s", "backoff_multiplier",
            "budget_percent", "budget_min_per_s", "budget_window_s")},
        "max_attempts": t.get("max_attempts", int), "buffer_bytes": t.get("buffer_bytes", int),
        "retry_on": None if codes is None else frozenset(codes),
        "idempotent_methods": None if methods is None else frozenset(methods)})  # fmt: skip


def _server_tls(parent: _Table) -> ServerTls | None:
    """The `tls` sub-table of a listener or of `[admin]`; None when there is none."""
    if parent.get("tls", dict) is None:
        return None
    t = parent.table("tls")
    return _build(t, ServerTls, {"cert_file": t.get("cert_file", str, ""),
        "key_file": t.get("key_file", str, ""),
        "client_ca_file": t.get("client_ca_file", str)})  # fmt: skip


def _client_tls(parent: _Table) -> ClientTls | None:
    """A cluster's `tls` sub-table (how endpoints are reached); None when there is none."""
    if parent.get("tls", dict) is None:
        return None
    t = parent.table("tls")
    return _build(t, ClientTls, {k: t.get(k, str) for k in (
        "ca_file", "cert_file", "key_file", "server_name")})  # fmt: skip


def _admin(t: _Table, environ: Mapping[str, str]) -> AdminConfig:
    token_env = t.get("token_env", str, DEFAULT_TOKEN_ENV)
    token = t.get("token", str) or environ.get(token_env) or None
    if token is not None and t.get("enabled", bool, True):
        source = t.key("token") if t.get("token", str) else f"{token_env} (admin.token_env)"
        try:
            check_token(token, source)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return _build(t, AdminConfig, {
        "enabled": t.get("enabled", bool), "address": t.get("address", str), "token": token,
        "metrics_address": t.get("metrics_address", str), "tls": _server_tls(t)})  # fmt: skip


def _xds(t: _Table, environ: Mapping[str, str]) -> XdsConfig | None:
    token_env = t.get("token_env", str, DEFAULT_XDS_TOKEN_ENV)
    token = t.get("token", str) or environ.get(token_env) or None
    if not t.get("enabled", bool, True):
        with t.building():
            t.get("address", str), t.get("tls", dict), t.get("load_report_interval_s", float)
        return None
    return _build(t, XdsConfig, {"address": t.get("address", str), "token": token,
        "tls": _server_tls(t),
        "load_report_interval_s": t.get("load_report_interval_s", float)})  # fmt: skip


def _control_plane(t: _Table, environ: Mapping[str, str]) -> ControlPlaneConfig:
    token_env = t.get("token_env", str, DEFAULT_CONTROL_TOKEN_ENV)
    token = t.get("token", str) or environ.get(token_env) or None
    return _build(t, ControlPlaneConfig, {
        "url": t.get("url", str, ""), "token": token, "token_env": token_env,
        "initial_fetch_timeout_s": t.get("initial_fetch_timeout_s", float),
        "ca_file": t.get("ca_file", str)})  # fmt: skip


def _haproxy(t: _Table) -> HaproxyConfig:
    global_lines, defaults_lines = t.strings("global_lines"), t.strings("defaults_lines")
    return _build(t, HaproxyConfig, {
        "binary": t.get("binary", str), "threads": t.get("threads", int),
        "runtime_socket": t.get("runtime_socket", str),
        "global_lines": None if global_lines is None else tuple(global_lines),
        "defaults_lines": None if defaults_lines is None else tuple(defaults_lines),
        **{k: t.get(k, int) for k in (
            "max_connections", "max_connections_per_peer", "max_streams_per_server")},
        "queue_timeout_s": t.get("queue_timeout_s", float),
    })  # fmt: skip


def config_from_dict(data: Mapping[str, Any], environ: Mapping[str, str]) -> BalancerConfig:
    """Builds and validates a BalancerConfig; raises ConfigError naming the bad key."""
    root = _Table(data, "")
    b, routing = root.table("balancer"), root.table("routing")
    listeners = tuple(_build(t, ListenerConfig, {"address": t.get("address", str, ""),
                                                 "tls": _server_tls(t)})
                      for t in root.tables("listeners"))  # fmt: skip
    routes = tuple(_build(t, Route, {**{k: t.get(k, str) for k in ("cluster", "service", "prefix")},
                                     "retry": _retry(t.table("retry"))
                                     if t.get("retry", dict) is not None else None})
                   for t in routing.tables("routes"))  # fmt: skip
    clusters = tuple(_cluster(t) for t in root.tables("clusters"))
    admin = _admin(root.table("admin"), environ) if "admin" in data else None
    haproxy = _haproxy(root.table("haproxy"))
    cp = root.table("control_plane")
    control_plane = _control_plane(cp, environ) if "control_plane" in data else None
    xds = _xds(root.table("xds"), environ) if "xds" in data else None
    settings = {k: b.get(k, kind) for k, kind in (
        ("id", str), ("max_message_bytes", int), ("max_in_flight_bytes", int),
        ("max_concurrent_streams", int), ("record_stats", bool),
        ("shutdown_grace_s", float), ("event_loop", str), ("engine", str),
        ("max_connection_age_s", float), ("max_connection_age_grace_s", float))}  # fmt: skip
    with b.building():
        pass
    default_cluster = routing.get("default_cluster", str)
    with routing.building():
        pass
    return _build(root, BalancerConfig, {
        **settings, "clusters": clusters,
        "listeners": listeners if "listeners" in data else None, "routes": routes,
        "default_cluster": default_cluster, "admin": admin,
        "control_plane": control_plane, "xds": xds, "haproxy": haproxy})  # fmt: skip


def load_config(path: Path, environ: Mapping[str, str]) -> BalancerConfig:
    """Reads the TOML file at `path`; raises ConfigError with the file, key and problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply; flatten it") from None
    try:
        return config_from_dict(data, environ)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
