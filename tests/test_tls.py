"""TLS on every port and toward upstreams: real certificates (made per test), real
servers on port 0, grpcio clients with and without the CA or a client certificate."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import ConfigError, config_from_dict
from balancer.endpoint import State
from balancer.server import Balancer
from balancer.tls import ClientTls, TlsError, is_loopback
from dashboard.app import collecting
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from dashboard.control import actions
from dashboard.control.desired import Command
from dashboard.control.push import push
from dashboard.env import envtls
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.certs import Issued, Pki, make_pki
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
CALL_TIMEOUT_S = 5.0
Backends = Callable[..., Awaitable[Backend]]
Balancers = Callable[..., Awaitable[Balancer]]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def server_tls(pki: Pki, mutual: bool = False) -> dict[str, str]:
    """A `tls` table for a port: the server cert; with `mutual`, client certs required."""
    table = {"cert_file": pki.server.cert, "key_file": pki.server.key}
    return {**table, "client_ca_file": pki.ca.cert_file} if mutual else table


def credentials(ca_file: str, client: Issued | None = None) -> grpc.ChannelCredentials:
    read = Path.read_bytes
    return grpc.ssl_channel_credentials(
        root_certificates=read(Path(ca_file)),
        private_key=read(Path(client.key)) if client else None,
        certificate_chain=read(Path(client.cert)) if client else None,
    )


async def unary(channel: grpc.aio.Channel) -> str:
    """One call of test.Echo/Unary; returns the name of the backend that served it."""
    call = channel.unary_unary(be.UNARY)(b"ping", timeout=CALL_TIMEOUT_S)
    assert await call == b"ping"
    return str(dict(await call.initial_metadata())["x-backend"])


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


def backend_credentials(cert: Issued, client_ca: str | None) -> grpc.ServerCredentials:
    pair = (Path(cert.key).read_bytes(), Path(cert.cert).read_bytes())
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


async def backend_over_tls(
    backends: Backends, pki: Pki, cert: Issued | None = None, client_ca: str | None = None
) -> Backend:
    """A backend serving TLS with `cert` (the pki's server cert by default), with health and
    reflection; `client_ca` makes it require client certificates signed by that CA."""
    creds = backend_credentials(cert or pki.server, client_ca)
    return await backends("pod-tls", with_reflection=True, credentials=creds)


# --- the listener -----------------------------------------------------------------------


async def tls_listener(
    backends: Backends, balancers: Balancers, pki: Pki, *, mutual: bool = False
) -> str:
    backend = await backends("pod-a")
    data: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:0", "tls": server_tls(pki, mutual)}],
        "clusters": [{"name": "echo", "discovery": {"endpoints": [backend.address]}}],
    }
    cfg = config_from_dict(data, environ={})
    balancer = await balancers(cfg)
    return balancer.listen_addresses[0]


async def test_it_serves_a_client_that_trusts_the_ca_on_a_tls_listener(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    address = await tls_listener(backends, balancers, pki)
    async with grpc.aio.secure_channel(address, credentials(pki.ca.cert_file)) as channel:
        assert await unary(channel) == "pod-a"


async def test_it_refuses_a_plaintext_client_on_a_tls_listener(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    address = await tls_listener(backends, balancers, pki)
    async with grpc.aio.insecure_channel(address) as channel:
        assert await code_of(unary(channel)) is grpc.StatusCode.UNAVAILABLE


async def test_it_refuses_a_client_that_does_not_trust_the_listeners_ca(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    address = await tls_listener(backends, balancers, pki)
    async with grpc.aio.secure_channel(address, credentials(pki.other.cert_file)) as channel:
        assert await code_of(unary(channel)) is grpc.StatusCode.UNAVAILABLE


async def test_it_requires_a_client_certificate_with_client_ca_file(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    address = await tls_listener(backends, balancers, pki, mutual=True)
    async with grpc.aio.secure_channel(address, credentials(pki.ca.cert_file)) as anonymous:
        assert await code_of(unary(anonymous)) is grpc.StatusCode.UNAVAILABLE
    stranger = pki.other.issue("stranger", sans=("stranger.test",), client=True)
    untrusted = credentials(pki.ca.cert_file, stranger)
    async with grpc.aio.secure_channel(address, untrusted) as channel:
        assert await code_of(unary(channel)) is grpc.StatusCode.UNAVAILABLE
    trusted = credentials(pki.ca.cert_file, pki.client)
    async with grpc.aio.secure_channel(address, trusted) as channel:
        assert await unary(channel) == "pod-a"


# --- the admin API and the metrics port ----------------------------------------------------


async def tls_admin(
    backends: Backends, balancers: Balancers, pki: Pki, *, mutual: bool = False, **admin: Any
) -> Balancer:
    backend = await backends("pod-a")
    return await balancers(config([backend], admin={"tls": server_tls(pki, mutual), **admin}))


async def get_snapshot(channel: grpc.aio.Channel, **kwargs: Any) -> admin_pb2.Snapshot:
    stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    request = admin_pb2.GetSnapshotRequest()
    snapshot: admin_pb2.Snapshot = await stub.GetSnapshot(request, timeout=CALL_TIMEOUT_S, **kwargs)
    return snapshot


async def test_it_serves_the_admin_api_over_tls_and_still_wants_the_token(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    balancer = await tls_admin(backends, balancers, pki)
    address = balancer.admin_address or ""
    async with grpc.aio.secure_channel(address, credentials(pki.ca.cert_file)) as channel:
        snapshot = await get_snapshot(channel, metadata=AUTH)
        assert [c.name for c in snapshot.clusters] == ["echo"]
        assert await code_of(get_snapshot(channel)) is grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(address) as plaintext:
        assert await code_of(get_snapshot(plaintext, metadata=AUTH)) is (
            grpc.StatusCode.UNAVAILABLE
        )


async def test_it_requires_a_client_certificate_on_the_admin_api_with_client_ca_file(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    balancer = await tls_admin(backends, balancers, pki, mutual=True)
    address = balancer.admin_address or ""
    async with grpc.aio.secure_channel(address, credentials(pki.ca.cert_file)) as anonymous:
        assert await code_of(get_snapshot(anonymous, metadata=AUTH)) is (
            grpc.StatusCode.UNAVAILABLE
        )
    trusted = credentials(pki.ca.cert_file, pki.client)
    async with grpc.aio.secure_channel(address, trusted) as channel:
        assert (await get_snapshot(channel, metadata=AUTH)).clusters[0].name == "echo"
        # The health service stays open to probes (no token), over TLS too.
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def fetch(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT_S, context=context) as response:
        return str(response.read().decode())


async def test_it_serves_metrics_over_https_when_the_admin_api_has_tls(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    balancer = await tls_admin(backends, balancers, pki, metrics_address="127.0.0.1:0")
    port = (balancer.metrics_address or "").rpartition(":")[2]
    context = ssl.create_default_context(cafile=pki.ca.cert_file)
    body = await asyncio.to_thread(fetch, f"https://127.0.0.1:{port}/metrics", context)
    assert "ballast_" in body
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")


async def test_it_serves_metrics_over_https_while_a_client_sits_idle_before_its_handshake(
    backends: Backends,
    balancers: Balancers,
    pki: Pki,
    capfd: pytest.CaptureFixture[str],
) -> None:
    balancer = await tls_admin(backends, balancers, pki, metrics_address="127.0.0.1:0")
    port = int((balancer.metrics_address or "").rpartition(":")[2])
    context = ssl.create_default_context(cafile=pki.ca.cert_file)
    # Connected, and never a ClientHello: it must not hold up the scrapes of others.
    with socket.create_connection(("127.0.0.1", port)):
        for _ in range(3):
            body = await asyncio.to_thread(fetch, f"https://127.0.0.1:{port}/metrics", context)
            assert "ballast_" in body
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    assert "Traceback" not in capfd.readouterr().err


# --- the warning for an exposed admin API --------------------------------------------------


def exposure_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "balancer.admin.server" and r.levelno == logging.WARNING
    ]


async def test_it_warns_once_when_the_admin_api_listens_off_loopback_without_tls(
    backends: Backends, balancers: Balancers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = await backends("pod-a")
    # 0.0.0.0 is bound, but no traffic is sent to it: the warning is the test.
    await balancers(config([backend], admin={"address": "0.0.0.0:0"}))
    (warning,) = exposure_warnings(caplog)
    assert re.search(r"^admin API on 0\.0\.0\.0:[1-9][0-9]*: not a loopback address", warning)
    assert "no TLS" in warning and "[admin.tls]" in warning


async def test_it_warns_about_the_metrics_port_off_loopback_in_the_same_line(
    backends: Backends, balancers: Balancers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = await backends("pod-a")
    await balancers(config([backend], admin={"metrics_address": "0.0.0.0:0"}))
    (warning,) = exposure_warnings(caplog)
    assert warning.startswith("metrics on 0.0.0.0:") and "admin API" not in warning


async def test_it_does_not_warn_with_tls_or_on_loopback(
    backends: Backends, balancers: Balancers, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = await backends("pod-a")
    await balancers(config([backend], admin={"metrics_address": "127.0.0.1:0"}))
    await balancers(config([backend], admin={"address": "0.0.0.0:0", "tls": server_tls(pki)}))
    assert exposure_warnings(caplog) == []


async def test_it_writes_the_exposure_warning_once_to_the_processs_stderr(tmp_path: Path) -> None:
    path = tmp_path / "ballast.toml"
    path.write_text(
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n[admin]\naddress = "0.0.0.0:0"\n\n'
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:1"]\n',
        encoding="utf-8",
    )
    ready_file = tmp_path / "ready.json"
    env = {**os.environ, "BALLAST_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--config", str(path), "--ready-file", str(ready_file),
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for(lambda: ready_file.exists() or proc.returncode is not None, 30, "ready")
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    warnings = [line for line in stderr.decode().splitlines() if " WARNING balancer.admin" in line]
    assert len(warnings) == 1, stderr.decode()
    assert re.search(
        r"admin API on 0\.0\.0\.0:[1-9][0-9]*: not a loopback address and no TLS", warnings[0]
    )


# --- upstream endpoints over TLS -----------------------------------------------------------


def upstream_config(backend: Backend, tls: dict[str, str] | None) -> Any:
    cluster: dict[str, Any] = {"health_check": {"enabled": True, "interval_s": 0.2}}
    if tls is not None:
        cluster["tls"] = tls
    return config([backend], cluster=cluster)


async def wait_until_ready(balancer: Balancer) -> None:
    cluster = balancer.clusters["echo"]
    await wait_for(
        lambda: all(ep.state is State.READY for ep in cluster.endpoints.values()),
        what="the endpoint to pass its health checks",
    )


async def test_it_reaches_a_tls_backend_with_health_checks_and_reflection(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    backend = await backend_over_tls(backends, pki)
    balancer = await balancers(upstream_config(backend, {"ca_file": pki.ca.cert_file}))
    await wait_until_ready(balancer)  # health checks pass over TLS
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert [await unary(channel) for _ in range(3)] == ["pod-tls"] * 3
    await wait_for(
        lambda: be.UNARY in balancer.clusters["echo"].unary_methods,
        what="reflection over TLS to learn the unary methods",
    )


async def test_it_cannot_reach_a_tls_backend_without_a_tls_table(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    backend = await backend_over_tls(backends, pki)
    balancer = await balancers(upstream_config(backend, None))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await code_of(unary(channel)) is grpc.StatusCode.UNAVAILABLE
    assert backend.calls == 0


async def test_it_verifies_the_server_name_given_instead_of_the_address(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    named = pki.ca.issue("backend-internal", sans=("backend.internal",))
    backend = await backend_over_tls(backends, pki, cert=named)
    plain = await balancers(upstream_config(backend, {"ca_file": pki.ca.cert_file}))
    async with grpc.aio.insecure_channel(plain.listen_addresses[0]) as channel:
        # The certificate names backend.internal, not 127.0.0.1: refused without the override.
        assert await code_of(unary(channel)) is grpc.StatusCode.UNAVAILABLE
    tls = {"ca_file": pki.ca.cert_file, "server_name": "backend.internal"}
    named_balancer = await balancers(upstream_config(backend, tls))
    await wait_until_ready(named_balancer)
    async with grpc.aio.insecure_channel(named_balancer.listen_addresses[0]) as channel:
        assert await unary(channel) == "pod-tls"


async def test_it_presents_a_client_certificate_to_a_backend_that_requires_one(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    backend = await backend_over_tls(backends, pki, client_ca=pki.ca.cert_file)
    anonymous = await balancers(upstream_config(backend, {"ca_file": pki.ca.cert_file}))
    async with grpc.aio.insecure_channel(anonymous.listen_addresses[0]) as channel:
        assert await code_of(unary(channel)) is grpc.StatusCode.UNAVAILABLE
    tls = {"ca_file": pki.ca.cert_file, "cert_file": pki.client.cert, "key_file": pki.client.key}
    balancer = await balancers(upstream_config(backend, tls))
    await wait_until_ready(balancer)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await unary(channel) == "pod-tls"


# --- config validation -------------------------------------------------------------------


def listener_config(tls: dict[str, str]) -> dict[str, Any]:
    return {
        "listeners": [{"address": "127.0.0.1:0", "tls": tls}],
        "clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]}}],
    }


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, environ={})
    return str(caught.value)


def test_it_names_a_missing_certificate_file(pki: Pki, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    message = config_error(listener_config({"cert_file": missing, "key_file": pki.server.key}))
    assert message == (
        f"listeners[0].tls: cert_file: cannot read {missing}: No such file or directory;"
        " check the path"
    )


def test_it_names_an_unreadable_or_non_pem_key_file(pki: Pki, tmp_path: Path) -> None:
    folder = str(tmp_path)
    message = config_error(listener_config({"cert_file": pki.server.cert, "key_file": folder}))
    assert message.startswith(f"listeners[0].tls: key_file: cannot read {folder}: ")
    text = tmp_path / "notes.txt"
    text.write_text("not a key\n", encoding="utf-8")
    message = config_error(listener_config({"cert_file": pki.server.cert, "key_file": str(text)}))
    assert message == f"listeners[0].tls: key_file: {text} is not a PEM file (no '-----BEGIN' line)"


def test_it_names_a_key_that_does_not_match_the_certificate(pki: Pki) -> None:
    data = listener_config({"cert_file": pki.server.cert, "key_file": pki.client.key})
    message = config_error(data)
    assert message.startswith(f"listeners[0].tls: key_file: {pki.client.key} is not the key of")


def test_it_refuses_a_client_ca_without_a_certificate(pki: Pki) -> None:
    data = listener_config({"client_ca_file": pki.ca.cert_file})
    assert config_error(data).startswith("listeners[0].tls: cert_file and key_file missing")


def test_it_names_the_admin_and_cluster_tls_keys(pki: Pki) -> None:
    data = listener_config(server_tls(pki))
    data["admin"] = {"token": ADMIN_TOKEN, "tls": {"cert_file": pki.server.cert}}
    assert config_error(data).startswith("admin.tls: key_file missing")
    data = listener_config(server_tls(pki))
    data["clusters"][0]["tls"] = {"ca_file": pki.ca.cert_file, "cert_file": pki.client.cert}
    assert config_error(data) == (
        "clusters[0].tls: cert_file and key_file go together: set both, for a client cert"
    )
    data["clusters"][0]["tls"] = {"ca_file": pki.server.key}
    assert "clusters[0].tls: ca_file: " in config_error(data)
    data["clusters"][0]["tls"] = {"cafile": pki.ca.cert_file}
    assert config_error(data) == "clusters[0].tls.cafile: unknown key; did you mean 'ca_file'?"


async def test_it_names_a_certificate_file_removed_between_check_and_start(
    backends: Backends, pki: Pki
) -> None:
    backend = await backends("pod-a")
    cfg = config([backend], admin={"tls": server_tls(pki)})
    await asyncio.to_thread(Path(pki.server.key).unlink)
    balancer = Balancer(cfg)
    with pytest.raises(TlsError, match=r"^key_file: cannot read .*server\.key: No such file"):
        await balancer.start()
    # Nothing is left running: the listener bound before the admin API is closed again.
    host, _, port = balancer.listen_addresses[0].rpartition(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()


def write_toml(path: Path, tls: dict[str, str]) -> Path:
    lines = "".join(f'{key} = "{value}"\n' for key, value in tls.items())
    path.write_text(
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n[listeners.tls]\n'
        f"{lines}\n"
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:1"]\n',
        encoding="utf-8",
    )
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(path), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_catches_tls_problems_with_check(pki: Pki, tmp_path: Path) -> None:
    good = check(write_toml(tmp_path / "good.toml", server_tls(pki)))
    assert good.returncode == 0, good.stderr
    mismatched = {"cert_file": pki.server.cert, "key_file": pki.client.key}
    bad = check(write_toml(tmp_path / "bad.toml", mismatched))
    assert bad.returncode == 2
    (line,) = bad.stderr.splitlines()
    assert line.startswith(f"ballast: bad config: {tmp_path / 'bad.toml'}: listeners[0].tls:")
    assert "key_file" in line and "Traceback" not in bad.stderr


# --- the dashboard's side: collector and push ----------------------------------------------


def admin_environ(pki: Pki, client: Issued | None = None) -> dict[str, str]:
    environ = {"BALLAST_ADMIN_CA_FILE": pki.ca.cert_file}
    if client is not None:
        environ |= {"BALLAST_ADMIN_CERT_FILE": client.cert, "BALLAST_ADMIN_KEY_FILE": client.key}
    return environ


def test_it_reads_the_admin_tls_from_the_environment(pki: Pki, tmp_path: Path) -> None:
    assert envtls("BALLAST_ADMIN", {}) is None
    assert envtls("BALLAST_ADMIN", admin_environ(pki, pki.client)) == ClientTls(
        ca_file=pki.ca.cert_file, cert_file=pki.client.cert, key_file=pki.client.key
    )
    missing = str(tmp_path / "ca.pem")
    with pytest.raises(
        ImproperlyConfigured, match="^" + re.escape(f"BALLAST_ADMIN_CA_FILE: cannot read {missing}")
    ):
        envtls("BALLAST_ADMIN", {"BALLAST_ADMIN_CA_FILE": missing})
    lonely = {"BALLAST_ADMIN_CERT_FILE": pki.client.cert}
    with pytest.raises(
        ImproperlyConfigured, match=r"^BALLAST_ADMIN_CERT_FILE and BALLAST_ADMIN_KEY"
    ):
        envtls("BALLAST_ADMIN", lonely)
    wrong = admin_environ(pki) | {
        "BALLAST_ADMIN_CERT_FILE": pki.client.cert,
        "BALLAST_ADMIN_KEY_FILE": pki.server.key,
    }
    with pytest.raises(ImproperlyConfigured, match=r"^BALLAST_ADMIN_KEY_FILE: .* is not the key"):
        envtls("BALLAST_ADMIN", wrong)


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_it_collects_from_and_pushes_to_a_tls_admin_api(
    backends: Backends, balancers: Balancers, pki: Pki, mutual: bool
) -> None:
    balancer = await tls_admin(backends, balancers, pki, mutual=mutual)
    tls = envtls("BALLAST_ADMIN", admin_environ(pki, pki.client if mutual else None))
    target = ReplicaTarget("b0", balancer.admin_address or "", ADMIN_TOKEN, tls)
    collector = Collector(
        CollectorConfig(
            replicas=[target],
            services={"echo": ServiceTarget("echo", "echo")},
            interval_s=0.25,
            backoff_s=(0.05, 0.1),
        ),
        publish=_ignore,
    )
    await collector.start()
    try:
        await wait_for(lambda: collector.snapshots()["b0"] is not None, what="a snapshot over TLS")
        result = await push(target, [Command("weight", "echo", "pod-a", weight=7)])
        assert result.applied, result.error

        def weight() -> int | None:
            snapshot = collector.snapshots()["b0"]
            return snapshot.clusters[0].endpoints[0].weight if snapshot else None

        await wait_for(lambda: weight() == 7, what="the pushed weight in the collected snapshot")
    finally:
        await collector.stop()


def test_it_takes_the_admin_tls_of_the_settings_from_the_environment(pki: Pki) -> None:
    code = "from dashboard import settings; print(repr(settings.BALLAST_ADMIN_TLS))"
    env = {**os.environ, "BALLAST_DEV": "1", **admin_environ(pki, pki.client)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(envtls("BALLAST_ADMIN", admin_environ(pki, pki.client)))


def test_it_gives_the_settings_admin_tls_to_every_replica_the_dashboard_reaches(pki: Pki) -> None:
    tls = envtls("BALLAST_ADMIN", admin_environ(pki))
    balancers = {"b0": "127.0.0.1:9901", "b1": "127.0.0.1:9902"}
    with override_settings(
        BALLAST_ADMIN_TLS=tls, BALLAST_BALANCERS=balancers, BALLAST_ADMIN_TOKEN=ADMIN_TOKEN
    ):
        collected = collecting.collector_config().replicas
        pushed_to = actions.replicas()
    assert [t.tls for t in collected] == [tls, tls]
    assert [t.tls for t in pushed_to] == [tls, tls]


async def test_it_reports_a_push_to_a_tls_admin_api_without_the_ca_as_unreachable(
    backends: Backends, balancers: Balancers, pki: Pki
) -> None:
    balancer = await tls_admin(backends, balancers, pki)
    for tls in (None, ClientTls(ca_file=pki.other.cert_file)):
        target = ReplicaTarget("b0", balancer.admin_address or "", ADMIN_TOKEN, tls)
        result = await push(target, [Command("weight", "echo", "pod-a", weight=7)], timeout_s=2)
        assert (result.applied, result.unreachable) == (False, True)


async def _ignore(frame: object) -> None:
    return None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("[::1]", True),
     ("0.0.0.0", False), ("[::]", False), ("10.0.0.2", False), ("ballast.internal", False)],
)  # fmt: skip
def test_it_tells_loopback_hosts_from_the_rest(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_it_takes_an_empty_cluster_tls_table_as_tls_with_the_public_roots() -> None:
    data = listener_config({})
    del data["listeners"]
    data["clusters"][0]["tls"] = {}
    (cluster,) = config_from_dict(data, environ={}).clusters
    assert cluster.tls == ClientTls()
