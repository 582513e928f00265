"""The HAProxy config file, written from Ballast's config and its current servers.

Written once per HAProxy process (start, restart after a crash, policy change);
between those, servers change in place over the runtime API. Every backend is
`mode http` with h2 both ways (`bind … proto h2`, `server … proto h2`): HAProxy
then balances each gRPC call (HTTP/2 stream) on its own, not each connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from balancer.config import BalancerConfig, ClusterConfig
from balancer.engines.haproxy.calls import LOG_FORMAT

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
) -> str:
    """The whole config file. `policies` and `servers` are keyed by cluster name; with
    `call_log` (a unix datagram socket's path) every call is logged there."""
    names = {c.name: backend_name(i, c.name) for i, c in enumerate(config.clusters)}
    frontends = [_frontend(config, i, a, names) for i, a in enumerate(listen_addresses)]
    backends = [
        _backend(names[c.name], policies[c.name], servers.get(c.name, ())) + _retries(c)
        for c in config.clusters
    ]
    parts = [_global(config, runtime_socket, call_log), _defaults(config), *frontends, *backends]
    return "\n".join(parts)


def _section(title: str, lines: Iterable[str]) -> str:
    return "".join([f"{title}\n", *(f"    {line}\n" for line in lines)])


def _global(config: BalancerConfig, runtime_socket: str, call_log: str | None) -> str:
    lines = [
        f"stats socket {runtime_socket} mode 600 level admin",
        f"tune.h2.max-concurrent-streams {config.max_concurrent_streams}",
        # In-flight streams get the same grace as the embedded engine's, then end.
        f"hard-stop-after {max(1, round(config.shutdown_grace_s * 1000))}ms",
    ]
    if config.haproxy.threads:
        lines.append(f"nbthread {config.haproxy.threads}")
    if call_log is not None:
        lines.append(f"log {call_log} len 1024 format raw local0 info")
    return _section("global", [*lines, *config.haproxy.global_lines])


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
    ]
    return _section("defaults", [*lines, *config.haproxy.defaults_lines])


def _frontend(config: BalancerConfig, index: int, address: str, names: dict[str, str]) -> str:
    lines = [
        f"bind {address} proto h2",
        # Response headers are read into the log through a capture (log-format cannot).
        "declare capture response len 4",
        "http-response capture res.hdr(grpc-status) id 0",
        f'log-format "{LOG_FORMAT}"',
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


def _backend(name: str, policy: str, servers: Sequence[Server]) -> str:
    lines = [f"balance {BALANCE[policy]}"]
    for s in servers:
        # A fresh process has no sessions: drain and maint are alike, and the runtime API
        # sets drain right after start.
        disabled = "" if s.admin == "ready" else " disabled"
        lines.append(f"server {s.name} {s.target} {SERVER_OPTIONS} weight {s.weight}{disabled}")
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


def _retries(cluster: ClusterConfig) -> str:
    """`retry_lines` as lines of the backend section `_backend` wrote just before."""
    return "".join(f"    {line}\n" for line in retry_lines(cluster))
