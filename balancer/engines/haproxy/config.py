"""The HAProxy config file, written from Ballast's config and its current servers.

Written once per HAProxy process (start, restart after a crash, policy change);
between those, servers change in place over the runtime API. Every backend is
`mode http` with h2 both ways (`bind … proto h2`, `server … proto h2`): HAProxy
then balances each gRPC call (HTTP/2 stream) on its own, not each connection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from balancer.config import (
    DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    BalancerConfig,
    ClusterConfig,
)
from balancer.engines.haproxy.calls import (
    ERROR_RING_BYTES,
    ERROR_RULE,
    LATENCY_SAMPLE,
    LOG_FORMAT,
)
from balancer.tls import ServerTls, TlsError, read_pem

# HAProxy's largest server weight; Ballast's weights go up to 10000.
MAX_HAPROXY_WEIGHT = 256

# Ballast's policies as HAProxy balance algorithms. All four take `add server` (2.6
# allows it only with a dynamic algorithm). Shares must follow weights under every policy
# (DESIGN.md), so least_request is `random(2)`, not `leastconn`: random(2) draws two servers
# by weight and keeps the one with fewer streams in flight per unit of weight, where
# leastconn ranks in-flight ÷ weight alone, which is 0 everywhere at light load, so its
# ties go round robin and the weights vanish (1:2:5 came out 1:1:1 at one call in flight;
# figures in docs/ARCHITECTURE.md). HAProxy's plain `random` draws twice too: Ballast's
# load-blind weighted random is random(1). HAProxy has no latency-aware algorithm:
# peak_ewma runs as least_request does.
BALANCE = {
    "round_robin": "roundrobin",
    "least_request": "random(2)",
    "random": "random(1)",
    "peak_ewma": "random(2)",
}

# gRPC calls and streams can be idle for long; HAProxy's timeouts would cut them.
_STREAM_TIMEOUT = "1h"
# Idle connections to a deleted server keep `del server` waiting until purged.
SERVER_OPTIONS = "proto h2 pool-purge-delay 1s"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class Server:
    """One HAProxy server as Ballast wants it: `admin` is ready, drain or maint."""

    name: str
    target: str
    admin: str
    weight: int


def backend_name(index: int, cluster: str) -> str:
    """A unique, HAProxy-safe backend name that still reads as the cluster's."""
    return f"c{index}_{_NAME_UNSAFE.sub('_', cluster)}"


def haproxy_weight(weight: float, max_weight: float) -> int:
    """Ballast's (effective) weight on HAProxy's 0–256 scale, relative to the cluster's
    largest: `round(weight × 256 / max_weight)`, at least 1 for any weight above 0.

    Relative, not absolute (`weight × 256 / 10000`): shares follow weight / sum, so
    scaling every weight alike keeps them, and the largest weight gets all 256 steps.
    Absolute scaling would put the default 100 at 2.56 → 3, and 100 vs 150 at 3 vs 4.
    Only ratios beyond 256:1 are lost (the small weight is held at 1).
    """
    if weight <= 0 or max_weight <= 0:
        return 0
    return max(1, round(weight * MAX_HAPROXY_WEIGHT / max_weight))


def render(
    config: BalancerConfig,
    *,
    listen_addresses: Sequence[str],
    runtime_socket: str,
    policies: dict[str, str],
    servers: dict[str, Sequence[Server]],
    call_log: str | None = None,
    latency_log: str | None = None,
    tls_dir: str = "",
) -> str:
    """The whole config file. `policies` and `servers` are keyed by cluster name; with
    `call_log` (a unix stream socket's path) and `latency_log` (a datagram socket's) calls
    that are not OK are logged to the first, one call in `LATENCY_SAMPLE` to the second
    (calls.py). `tls_dir` holds the PEM files `write_tls_files` wrote (needed when TLS is
    configured)."""
    names = {c.name: backend_name(i, c.name) for i, c in enumerate(config.clusters)}
    frontends = [_frontend(config, i, a, names, tls_dir) for i, a in enumerate(listen_addresses)]
    backends = [
        _backend(
            names[c.name],
            policies[c.name],
            servers.get(c.name, ()),
            server_options(config, i, tls_dir),
            tls=c.tls is not None,
            extra=[*retry_lines(c), *busy_answer(config)],
        )
        for i, c in enumerate(config.clusters)
    ]
    logs = _log_lines(call_log, latency_log)
    rings = [] if call_log is None else [_error_ring(call_log)]
    parts = [*rings, _global(config, runtime_socket, logs), _defaults(config)]
    parts += [*frontends, *backends]
    return "\n".join(parts)


def _section(title: str, lines: Iterable[str]) -> str:
    return "".join([f"{title}\n", *(f"    {line}\n" for line in lines)])


_ERROR_RING = "ballast_errors"


def _error_ring(call_log: str) -> str:
    """The error log's ring, forwarded to Ballast's unix stream socket `call_log`."""
    lines = [
        "format raw",
        "maxlen 1024",
        f"size {ERROR_RING_BYTES}",
        "timeout connect 5s",
        f"timeout server {_STREAM_TIMEOUT}",
        f"server ballast unix@{call_log}",
    ]
    return _section(f"ring {_ERROR_RING}", lines)


def _log_lines(call_log: str | None, latency_log: str | None) -> list[str]:
    lines = []
    if call_log is not None:
        lines.append(f"log ring@{_ERROR_RING} len 1024 format raw local0 err")
    if latency_log is not None:
        sample = f"sample 1:{LATENCY_SAMPLE}"
        lines.append(f"log {latency_log} len 1024 format raw {sample} local0 info")
    return lines


def _global(config: BalancerConfig, runtime_socket: str, logs: list[str]) -> str:
    lines = [
        f"stats socket {runtime_socket} mode 600 level admin",
        f"tune.h2.max-concurrent-streams {config.max_concurrent_streams}",
        # In-flight streams get the same grace as the embedded engine's, then end.
        f"hard-stop-after {max(1, round(config.shutdown_grace_s * 1000))}ms",
    ]
    if config.haproxy.threads:
        lines.append(f"nbthread {config.haproxy.threads}")
    if config.haproxy.max_connections:
        lines.append(f"maxconn {config.haproxy.max_connections}")
    return _section("global", [*lines, *logs, *config.haproxy.global_lines])


def _defaults(config: BalancerConfig) -> str:
    lines = [
        "mode http",
        "log global",
        "timeout connect 5s",
        f"timeout client {_STREAM_TIMEOUT}",
        f"timeout server {_STREAM_TIMEOUT}",
        "timeout client-fin 30s",
        "timeout server-fin 30s",
        # A server that refuses or resets: try another once, as a gRPC client's picker would.
        "retries 1",
        "option redispatch 1",
        # One h2 connection per server and thread carries every client's streams. With the
        # default (`safe`) each burst of new streams opened connections of its own and
        # they piled up (64 to two pods after five bursts of 64 calls; 4 → 18 in 10 s of
        # load), so each pod read fewer calls per wakeup. gRPC streams are independent:
        # nothing is bound to a connection. A request sent as a pod closes an idle
        # connection is retried when the cluster retries (`retry-on conn-failure
        # empty-response`), as under `safe` for every request after a session's first.
        "http-reuse always",
    ]
    return _section("defaults", [*lines, *config.haproxy.defaults_lines])


def _frontend(
    config: BalancerConfig, index: int, address: str, names: dict[str, str], tls_dir: str
) -> str:
    lines = [
        bind_line(address, _listener_tls(config, index), tls_dir, index),
        *connection_limit_lines(config),
        # Response headers are read into the log through a capture (log-format cannot).
        "declare capture response len 4",
        "http-response capture res.hdr(grpc-status) id 0",
        f'log-format "{LOG_FORMAT}"',
        # Calls that are not plainly OK go to the error log (calls.py).
        "option log-separate-errors",
        ERROR_RULE,
    ]
    for route in config.routes:
        lines.append(f"use_backend {names[route.cluster]} if {{ path_beg {route.path_prefix} }}")
    default = config.default_cluster
    if default is None and len(config.clusters) == 1:
        default = config.clusters[0].name
    if default is not None:
        lines.append(f"default_backend {names[default]}")
    else:
        # The embedded engine's answer, as a trailers-only gRPC response.
        lines.append(
            "http-request return status 200 content-type application/grpc"
            ' hdr grpc-status 12 hdr grpc-message "ballast: no route for this method and no'
            ' default cluster; add a route for it"'
        )
    return _section(f"frontend listener{index}", lines)


def _backend(
    name: str,
    policy: str,
    servers: Sequence[Server],
    options: str = SERVER_OPTIONS,
    *,
    tls: bool = False,
    extra: Sequence[str] = (),
) -> str:
    lines = [f"balance {BALANCE[policy]}", *extra]
    if tls:
        lines.append(tls_seed_line(options))
    for s in servers:
        # A fresh process has no sessions: drain and maint are alike, and the runtime API
        # sets drain right after start.
        disabled = "" if s.admin == "ready" else " disabled"
        lines.append(f"server {s.name} {s.target} {options} weight {s.weight}{disabled}")
    return _section(f"backend {name}", lines)


def retry_lines(cluster: ClusterConfig) -> list[str]:
    """The cluster's retry policy as far as HAProxy can follow it.

    `retries` (max_attempts − 1), each on another server (the defaults' `option
    redispatch 1`), `retry-on conn-failure empty-response`: the failures where the
    endpoint never saw the call (refused, reset before any answer). HAProxy sees a
    gRPC error as HTTP 200 with the status in trailers and knows nothing of methods,
    so status codes, idempotent methods, the per-try timeout, backoff and the budget
    are the embedded engine's alone. It retries only requests that fit its buffer
    (`tune.bufsize`, 16 KiB by default).
    """
    policy = cluster.retry
    if not policy.enabled:
        return ["retries 0"]
    return [f"retries {policy.max_attempts - 1}", "retry-on conn-failure empty-response"]


# --- TLS, connection and stream limits ----------------------------------------------------

# A disabled server carrying a TLS backend's CA and client certificate: HAProxy 2.6 loads
# certificate files only while it reads its config, and `add server … ca-file X crt Y`
# at run time finds them only when a server of the file referenced them.
TLS_SEED_SERVER = "tls-seed"
# HAProxy takes a certificate and its key in one PEM file.
_PEM_MODE = 0o600
# A stick table entry per client address (~100 bytes). An entry in use never expires;
# one whose last connection ended goes after the expiry, so the table holds about the
# peers connected now. Past its size, new peers are not tracked (nor limited), not refused.
_PEER_TABLE = "size 100k expire 60s"


def listener_pem(tls_dir: str, index: int) -> str:
    """The certificate + key file HAProxy serves listener `index` with."""
    return os.path.join(tls_dir, f"listener{index}.pem")


def upstream_pem(tls_dir: str, index: int) -> str:
    """The client certificate + key file HAProxy presents to cluster `index`'s endpoints."""
    return os.path.join(tls_dir, f"upstream{index}.pem")


def write_tls_files(config: BalancerConfig, tls_dir: str) -> None:
    """Writes, into `tls_dir` (the engine's private directory), one PEM of certificate and
    key per TLS listener and per cluster with a client certificate, readable by this user
    only. Copied once, when the engine starts: a rotated certificate is served from
    Ballast's next start (HAProxy's restarts in between read these copies). Raises
    TlsError when a file went missing since the config was checked."""
    for i, listener in enumerate(config.listeners):
        if listener.tls is not None:
            _write_pair(listener_pem(tls_dir, i), listener.tls.cert_file, listener.tls.key_file)
    for i, cluster in enumerate(config.clusters):
        tls = cluster.tls
        if tls is not None and tls.cert_file is not None and tls.key_file is not None:
            _write_pair(upstream_pem(tls_dir, i), tls.cert_file, tls.key_file)


def _write_pair(path: str, cert_file: str, key_file: str) -> None:
    try:
        data = read_pem("cert_file", cert_file) + b"\n" + read_pem("key_file", key_file)
    except ValueError as err:
        raise TlsError(str(err)) from None
    # Created 0600 before any byte is written: the key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PEM_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _listener_tls(config: BalancerConfig, index: int) -> ServerTls | None:
    return config.listeners[index].tls if index < len(config.listeners) else None


def bind_line(address: str, tls: ServerTls | None, tls_dir: str, index: int) -> str:
    """Listener `index`'s `bind`: h2; over TLS (ALPN h2) with its certificate; with a client
    CA, client certificates signed by it are required (mTLS)."""
    line = f"bind {address} proto h2"
    if tls is None:
        return line
    line += f" ssl crt {listener_pem(tls_dir, index)} alpn h2"
    if tls.client_ca_file is not None:
        line += f" verify required ca-file {tls.client_ca_file}"
    return line


def server_options(config: BalancerConfig, index: int, tls_dir: str) -> str:
    """The options of every server of cluster `index`, in the file and in `add server`:
    h2; over TLS when the cluster has `tls` (the server's certificate verified against
    its CA, or the system's roots, and its name); `maxconn` with max_streams_per_server."""
    options = SERVER_OPTIONS
    limit = config.haproxy.max_streams_per_server
    if limit:
        # Per server, `maxconn` counts streams (calls) on h2: the excess waits in the queue.
        options += f" maxconn {limit}"
    cluster = config.clusters[index]
    if cluster.tls is not None:
        options += " " + _upstream_tls(cluster, upstream_pem(tls_dir, index))
    return options


def _upstream_tls(cluster: ClusterConfig, pem: str) -> str:
    tls = cluster.tls
    assert tls is not None
    ca = tls.ca_file or "@system-ca"
    # `sni` also sets the name `verify` checks (the config requires server_name).
    words = f"ssl verify required ca-file {ca} alpn h2 sni str({tls.server_name})"
    if tls.cert_file is not None:
        words += f" crt {pem}"
    return words


def tls_seed_line(options: str) -> str:
    return f"server {TLS_SEED_SERVER} 127.0.0.1:1 {options} disabled"


def connection_limit_lines(config: BalancerConfig) -> list[str]:
    """A listener's client connection counting per peer address (its stick table, which
    the engine reads for the snapshot), and its limits when set."""
    lines = [
        f"stick-table type ipv6 {_PEER_TABLE} store conn_cur",
        "tcp-request connection track-sc0 src",
    ]
    per_peer = config.haproxy.max_connections_per_peer
    if per_peer:
        # Refused at accept (before TLS): the peer's open connections are untouched.
        lines.append(f"tcp-request connection reject if {{ sc0_conn_cur gt {per_peer} }}")
    if config.haproxy.max_connections:
        lines.append(f"maxconn {config.haproxy.max_connections}")
    return lines


def busy_answer(config: BalancerConfig) -> list[str]:
    """With max_streams_per_server, a backend's queue timeout and its answer: a call that
    waited `queue_timeout_s` for a free endpoint gets UNAVAILABLE (retryable, as gRPC maps
    HTTP 503) saying which limit was full, rather than HAProxy's bare 503."""
    limit = config.haproxy.max_streams_per_server
    if not limit:
        return []
    wait_s = config.haproxy.queue_timeout_s
    message = (
        f"ballast: no endpoint could take the call: each has haproxy.max_streams_per_server"
        f" ({limit}) calls in flight and it waited haproxy.queue_timeout_s ({wait_s:g} s),"
        " or none is reachable; retry later"
    )
    return [
        f"timeout queue {_ms(wait_s)}ms",
        # HAProxy's 503s of this backend (queue timeout, no server) as a gRPC answer.
        "http-error status 503 hdr content-type application/grpc hdr grpc-status 14"
        f' hdr grpc-message "{message}"',
    ]


def unenforced_limits(config: BalancerConfig) -> str | None:
    """One warning line for limits the config sets that HAProxy cannot enforce; None when
    there are none. HAProxy relays gRPC messages as HTTP/2 DATA without reading the
    gRPC framing, so it can limit neither a message's size nor bytes in flight."""
    keys = []
    if config.max_message_bytes != DEFAULT_MAX_MESSAGE_BYTES:
        keys.append(f"balancer.max_message_bytes = {config.max_message_bytes}")
    if config.max_in_flight_bytes != DEFAULT_MAX_IN_FLIGHT_BYTES:
        keys.append(f"balancer.max_in_flight_bytes = {config.max_in_flight_bytes}")
    if not keys:
        return None
    return (
        f"{' and '.join(keys)}: not enforced with balancer.engine = 'haproxy' (HAProxy relays"
        " gRPC messages without reading their framing); the pods' and clients' own gRPC"
        " message limits still apply, and haproxy.max_streams_per_server bounds calls"
        " in flight"
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
