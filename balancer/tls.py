"""TLS for Ballast's ports and its upstream channels: settings, checks, gRPC credentials.

Two settings types, both frozen and checked when built, so `--check` catches what
start would: `ServerTls` (a port's certificate and key, and a client CA that makes
client certificates required — mTLS) and `ClientTls` (how a channel verifies the
server — a CA, or gRPC's bundled roots when none —, an optional client certificate,
and an optional name to verify instead of the target's host).

Files are checked with the standard library's `ssl` (a key that does not belong to
its certificate, a CA file with no certificate), and read again when credentials
are made, so a rotated file is picked up by the next start. Nothing here logs or
keeps key material in a `repr`.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

_PEM_MARK = b"-----BEGIN "


class TlsError(OSError):
    """A certificate or key file could not be loaded when a port or channel was made."""


class _Encrypted(Exception):
    """Raised from the password callback: gRPC cannot use an encrypted key."""


def read_pem(name: str, path: str) -> bytes:
    """The bytes of a PEM file; raises ValueError naming `name` (the key or variable)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{name}: cannot read {path}: {err.strerror}; check the path") from None
    if _PEM_MARK not in data:
        raise ValueError(f"{name}: {path} is not a PEM file (no '-----BEGIN' line)")
    return data


def check_key_pair(cert_file: str, key_file: str, *, cert_name: str, key_name: str) -> None:
    """Raises ValueError unless both files are PEM and the key belongs to the certificate."""
    read_pem(cert_name, cert_file)
    read_pem(key_name, key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except _Encrypted:
        raise ValueError(
            f"{key_name}: {key_file} is encrypted; gRPC needs an unencrypted key"
            " (decrypt it with `openssl pkey -in KEY -out KEY.plain`)"
        ) from None
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err):
            raise ValueError(
                f"{key_name}: {key_file} is not the key of {cert_name} {cert_file};"
                " use the key the certificate was issued for"
            ) from None
        raise ValueError(
            f"{cert_name}/{key_name}: {cert_file} and {key_file} are not a PEM certificate"
            f" and its private key ({err.reason or err})"
        ) from None


def check_ca(name: str, path: str) -> None:
    """Raises ValueError unless `path` holds at least one PEM CA certificate."""
    read_pem(name, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as err:
        raise ValueError(
            f"{name}: {path} holds no usable CA certificate ({err.reason or err})"
        ) from None


def _no_password() -> str:
    raise _Encrypted


@dataclass(frozen=True)
class ServerTls:
    """A port served over TLS; with `client_ca_file`, clients must present a certificate
    signed by that CA (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def __post_init__(self) -> None:
        if missing := [k for k in ("cert_file", "key_file") if not getattr(self, k)]:
            raise ValueError(
                f"{' and '.join(missing)} missing: TLS on a port needs its certificate"
                " (cert_file) and key (key_file); client_ca_file only adds client checks"
            )
        check_key_pair(self.cert_file, self.key_file, cert_name="cert_file", key_name="key_file")
        if self.client_ca_file is not None:
            check_ca("client_ca_file", self.client_ca_file)

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


@dataclass(frozen=True)
class ClientTls:
    """A channel over TLS. `ca_file` None: gRPC's bundled public roots verify the server.
    `server_name`: the name the server's certificate must carry, when it is not the
    target's host (an IP address, or a name behind a proxy)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None:
            check_ca("ca_file", self.ca_file)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both, for a client cert")
        if self.cert_file is not None and self.key_file is not None:
            check_key_pair(
                self.cert_file, self.key_file, cert_name="cert_file", key_name="key_file"
            )
        if self.server_name is not None and not self.server_name.strip():
            raise ValueError("server_name must not be blank: leave it out to verify the host")


def _load(name: str, path: str) -> bytes:
    try:
        return read_pem(name, path)
    except ValueError as err:
        raise TlsError(str(err)) from None


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """gRPC credentials for a port; raises TlsError when a file went missing since the check."""
    pair = (_load("key_file", tls.key_file), _load("cert_file", tls.cert_file))
    client_ca = _load("client_ca_file", tls.client_ca_file) if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    """gRPC credentials for a channel; raises TlsError when a file went missing since the check."""
    return grpc.ssl_channel_credentials(
        root_certificates=_load("ca_file", tls.ca_file) if tls.ca_file else None,
        private_key=_load("key_file", tls.key_file) if tls.key_file else None,
        certificate_chain=_load("cert_file", tls.cert_file) if tls.cert_file else None,
    )


def open_channel(
    target: str, tls: ClientTls | None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: plaintext when `tls` is None, else over TLS."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    extra = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=[*options, *extra])


def is_loopback(host: str) -> bool:
    """True when `host` (an address's host part, brackets allowed) is reachable only locally.

    `0.0.0.0` and `::` (every address) and any name but `localhost` count as not loopback.
    """
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
