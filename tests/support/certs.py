"""Test certificates made at test time (never committed): a CA, server and client certs.

`make_pki(tmp_path)` writes PEM files and returns their paths. ECDSA P-256 keys: quick
to make, and every TLS stack here (grpc's BoringSSL, Python's ssl) takes them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost", "127.0.0.1")
_VALID = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: str
    key: str


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate file, and what signs the certificates it issues."""

    cert_file: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    folder: Path

    def issue(self, name: str, sans: tuple[str, ...] = LOCAL_NAMES, client: bool = False) -> Issued:
        """A leaf certificate for `sans` (DNS names or IP addresses), signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            _builder(name, key)
            .issuer_name(self.cert.subject)
            .add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(
            cert=_write(self.folder / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            key=_write(self.folder / f"{name}.key", _key_pem(key)),
        )


@dataclass(frozen=True)
class Pki:
    """A CA with a server cert for localhost/127.0.0.1 and a client cert; `other` is a
    second, unrelated CA (its certificates are not trusted by the first)."""

    ca: Authority
    server: Issued
    client: Issued
    other: Authority


def make_ca(folder: Path, name: str = "test-ca") -> Authority:
    """A self-signed CA writing its files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True,
        crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(name, key)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = _write(folder / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
    return Authority(cert_file=cert_file, cert=cert, key=key, folder=folder)


def make_pki(folder: Path) -> Pki:
    ca = make_ca(folder / "ca")
    return Pki(
        ca=ca,
        server=ca.issue("server"),
        client=ca.issue("client", sans=("client.test",), client=True),
        other=make_ca(folder / "other", name="other-ca"),
    )


def _builder(name: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
