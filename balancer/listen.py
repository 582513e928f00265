"""Binding gRPC servers' ports, shared by the embedded engine and the admin API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc.aio

from balancer.tls import ServerTls, server_credentials

if TYPE_CHECKING:
    from balancer.config import BalancerConfig


class ListenError(OSError):
    """An address could not be bound (in use, or not an address of this machine)."""


def bind(server: grpc.aio.Server, address: str, what: str, tls: ServerTls | None = None) -> str:
    """Adds a port, over TLS when `tls` is set; returns the bound `host:port` (port 0 → the
    chosen one). Raises ListenError, or TlsError when a certificate file cannot be read."""
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError:
        raise cannot_listen(address, what) from None
    return f"{address.rpartition(':')[0]}:{port}"


def cannot_listen(address: str, what: str) -> ListenError:
    return ListenError(
        f"cannot listen on {address} ({what}): the port is in use or the host is not"
        " an address of this machine; pick another address or stop what holds it"
    )


def grpc_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def connection_age_options(config: BalancerConfig) -> list[tuple[str, Any]]:
    """The listener's GOAWAY after `max_connection_age_s` (and its grace); none when unset."""
    options: list[tuple[str, Any]] = []
    if config.max_connection_age_s is not None:
        options.append(("grpc.max_connection_age_ms", _ms(config.max_connection_age_s)))
    if config.max_connection_age_grace_s is not None:
        options.append(("grpc.max_connection_age_grace_ms", _ms(config.max_connection_age_grace_s)))
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
