"""The embedded engine's safety features under HAProxy: TLS and mTLS listeners, TLS to the
endpoints, client connections per peer (counted and limited), calls in flight per endpoint
(limited, the excess queued then refused), limits HAProxy cannot enforce said once.

A real HAProxy child, real grpcio clients and backends, certificates made per test."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psutil
import pytest

from balancer.config import BalancerConfig, ConfigError, config_from_dict
from balancer.discovery import Add, Reset
from balancer.endpoint import Address, State
from balancer.engines.haproxy.config import Server, render, write_tls_files
from balancer.engines.haproxy.runtime import parse_peers
from balancer.server import Balancer
from tests.engines.test_haproxy_faults import QueueDiscovery
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.certs import Issued, Pki, make_pki
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = "/usr/sbin/haproxy"
CALL_TIMEOUT_S = 20.0
Backends = Callable[..., Awaitable[Backend]]
Balancers = Callable[..., Awaitable[Balancer]]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def haproxy_config(
    backends: list[Backend],
    *,
    listener: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    haproxy: dict[str, Any] | None = None,
    **balancer: Any,
) -> BalancerConfig:
    """One cluster (`echo`) over `backends`, served by HAProxy on one listener."""
    endpoints = [{"address": b.address, "name": b.name} for b in backends]
    data: dict[str, Any] = {
        "balancer": {"id": "test", "engine": "haproxy", "shutdown_grace_s": 1, **balancer},
        "haproxy": haproxy or {},
        "listeners": [{"address": "127.0.0.1:0", **(listener or {})}],
        "clusters": [{"name": "echo", "discovery": {"endpoints": endpoints}, **(cluster or {})}],
    }
    return config_from_dict(data, environ={})


def credentials(ca_file: str, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(client.key).read_bytes() if client else None,
        certificate_chain=Path(client.cert).read_bytes() if client else None,
    )


def backend_credentials(cert: Issued, client_ca: str | None = None) -> grpc.ServerCredentials:
    pair = (Path(cert.key).read_bytes(), Path(cert.cert).read_bytes())
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


async def unary(channel: grpc.aio.Channel, **metadata: str) -> str:
    """One call of test.Echo/Unary; the name of the backend that served it."""
    md = [(k.replace("_", "-"), v) for k, v in metadata.items()]
    call = channel.unary_unary(be.UNARY)(b"ping", metadata=md, timeout=CALL_TIMEOUT_S)
    assert await call == b"ping"
    return str(dict(await call.initial_metadata())["x-backend"])


async def error_of(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def own_channel(
    target: str, creds: grpc.ChannelCredentials | None = None, backoff_s: float | None = None
) -> grpc.aio.Channel:
    """A channel with its own TCP connection (grpcio shares subchannels between channels
    to one target unless told not to); `backoff_s`: its wait before reconnecting."""
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if backoff_s is not None:
        backoff_ms = round(backoff_s * 1000)
        options += [
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ]
    if creds is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, creds, options=options)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[..., grpc.aio.Channel]]:
    opened: list[grpc.aio.Channel] = []

    def open_(
        target: str, creds: grpc.ChannelCredentials | None = None, backoff_s: float | None = None
    ) -> grpc.aio.Channel:
        channel = own_channel(target, creds, backoff_s)
        opened.append(channel)
        return channel

    yield open_
    for channel in opened:
        await channel.close()


# --- TLS on the listener ------------------------------------------------------------------


def listener_tls(pki: Pki, *, mutual: bool = False) -> dict[str, Any]:
    table = {"cert_file": pki.server.cert, "key_file": pki.server.key}
    return {"tls": {**table, "client_ca_file": pki.ca.cert_file} if mutual else table}


async def test_it_serves_a_tls_listener_through_haproxy(backends, balancers, channels, pki):
    backend = await backends("pod-a")
    balancer = await balancers(haproxy_config([backend], listener=listener_tls(pki)))
    target = balancer.listen_addresses[0]
    assert await unary(channels(target, credentials(pki.ca.cert_file))) == "pod-a"
    # A client that does not trust the CA, and one speaking plaintext, get nothing through.
    untrusting = channels(target, credentials(pki.other.cert_file))
    assert (await error_of(unary(untrusting))).code() == grpc.StatusCode.UNAVAILABLE
    plaintext = channels(target)
    assert (await error_of(unary(plaintext))).code() == grpc.StatusCode.UNAVAILABLE
    assert backend.calls == 1


async def test_it_requires_a_client_certificate_on_an_mtls_listener(
    backends, balancers, channels, pki
):
    backend = await backends("pod-a")
    balancer = await balancers(haproxy_config([backend], listener=listener_tls(pki, mutual=True)))
    target = balancer.listen_addresses[0]
    with_cert = channels(target, credentials(pki.ca.cert_file, pki.client))
    assert await unary(with_cert) == "pod-a"
    without = channels(target, credentials(pki.ca.cert_file))
    assert (await error_of(unary(without))).code() == grpc.StatusCode.UNAVAILABLE
    stranger = pki.other.issue("stranger", sans=("client.test",), client=True)
    wrong = channels(target, credentials(pki.ca.cert_file, stranger))
    assert (await error_of(unary(wrong))).code() == grpc.StatusCode.UNAVAILABLE
    assert backend.calls == 1


async def test_it_keeps_the_listener_key_private(backends, balancers, pki):
    backend = await backends("pod-a")
    balancer = await balancers(haproxy_config([backend], listener=listener_tls(pki)))
    folder = balancer.engine.runtime_dir  # type: ignore[attr-defined]
    assert_private_key_file(folder, pki.server.key)
    await balancer.stop(grace_s=0)
    assert not await asyncio.to_thread(os.path.exists, folder)  # the key goes with the engine


def assert_private_key_file(folder: str, key_file: str) -> None:
    """`folder` holds one PEM with the key, both readable by this user only, out of the repo."""
    (pem,) = Path(folder).glob("*.pem")
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(folder).stat().st_mode) == 0o700
    assert Path(key_file).read_text() in pem.read_text()
    assert ROOT not in pem.resolve().parents


# --- TLS to the endpoints -----------------------------------------------------------------


def upstream_tls(pki: Pki, ca_file: str | None = None, client: Issued | None = None) -> dict:
    table = {"ca_file": ca_file or pki.ca.cert_file, "server_name": "localhost"}
    if client is not None:
        table |= {"cert_file": client.cert, "key_file": client.key}
    return {"tls": table}


async def test_it_reaches_tls_endpoints_also_those_added_at_run_time(
    backends, balancers, channels, pki
):
    a = await backends("pod-a", credentials=backend_credentials(pki.server))
    b = await backends("pod-b", credentials=backend_credentials(pki.server))
    discovery = QueueDiscovery(Reset((Address("127.0.0.1", a.port, pod_name="pod-a"),)))
    cfg = haproxy_config([a], cluster=upstream_tls(pki))
    balancer = await balancers(cfg, discovery=discovery)
    proxy = channels(balancer.listen_addresses[0])
    assert await unary(proxy) == "pod-a"
    discovery.updates.put_nowait(Add((Address("127.0.0.1", b.port, pod_name="pod-b"),)))
    served: Counter[str] = Counter()

    async def both_served() -> None:
        while served["pod-b"] < 5:
            served[await unary(proxy)] += 1

    await asyncio.wait_for(both_served(), 30)  # `add server … ssl` at run time, no error
    assert served["pod-a"] > 0


async def test_it_refuses_an_endpoint_whose_certificate_it_cannot_verify(
    backends, balancers, channels, pki
):
    # The pod's certificate is signed by a CA the cluster does not trust.
    impostor = pki.other.issue("impostor")
    a = await backends("pod-a", credentials=backend_credentials(impostor))
    balancer = await balancers(haproxy_config([a], cluster=upstream_tls(pki)))
    err = await error_of(unary(channels(balancer.listen_addresses[0])))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert a.calls == 0


async def test_it_presents_its_client_certificate_to_mtls_endpoints(
    backends, balancers, channels, pki
):
    creds = backend_credentials(pki.server, client_ca=pki.ca.cert_file)
    a = await backends("pod-a", credentials=creds)
    cfg = haproxy_config([a], cluster=upstream_tls(pki, client=pki.client))
    balancer = await balancers(cfg)
    assert await unary(channels(balancer.listen_addresses[0])) == "pod-a"


# --- client connections per peer ----------------------------------------------------------


async def test_it_refuses_a_peers_connection_over_its_limit_and_keeps_the_others(
    backends, balancers, channels
):
    backend = await backends("pod-a")
    cfg = haproxy_config([backend], haproxy={"max_connections_per_peer": 2})
    balancer = await balancers(cfg)
    target = balancer.listen_addresses[0]
    first, second = channels(target), channels(target)
    assert [await unary(first), await unary(second)] == ["pod-a", "pod-a"]
    # Its reconnect backoff outlasts the test: a closed grpcio channel's pending reconnect
    # can still connect once, and would take the slot freed below.
    third = channels(target, backoff_s=600)
    err = await error_of(unary(third))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    await third.close()
    # The connections already open keep working.
    assert [await unary(first), await unary(second)] == ["pod-a", "pod-a"]
    await wait_for(
        lambda: balancer.connections_by_peer() == {"127.0.0.1": 2}, 10, what="2 connections"
    )
    # One closes: the peer may connect again.
    await first.close()
    await wait_for(lambda: balancer.connections_by_peer() == {"127.0.0.1": 1}, 10)
    assert await unary(channels(target)) == "pod-a"


async def test_it_holds_a_connection_over_max_connections_until_one_closes(
    backends, balancers, channels
):
    backend = await backends("pod-a")
    balancer = await balancers(haproxy_config([backend], haproxy={"max_connections": 2}))
    target = balancer.listen_addresses[0]
    first, second = channels(target), channels(target)
    assert [await unary(first), await unary(second)] == ["pod-a", "pod-a"]
    # HAProxy stops accepting at maxconn: the third waits in the listen backlog, its call
    # ends at its deadline, and the pod never sees it.
    third = channels(target)
    call = third.unary_unary(be.UNARY)(b"ping", timeout=2)
    assert (await error_of(call)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert backend.calls == 2
    await first.close()
    assert await unary(third) == "pod-a"
    assert await unary(second) == "pod-a"


async def test_it_counts_client_connections_per_peer(backends, balancers, channels):
    backend = await backends("pod-a")
    balancer = await balancers(haproxy_config([backend]))
    target = balancer.listen_addresses[0]
    opened = [channels(target) for _ in range(3)]
    for channel in opened:
        await unary(channel)
    await wait_for(lambda: balancer.connections_by_peer() == {"127.0.0.1": 3}, 10)


# --- calls in flight per endpoint ---------------------------------------------------------


class Watermark:
    """The largest number of calls a backend had in flight at once, sampled."""

    def __init__(self, backend: Backend) -> None:
        self.high = 0
        self._backend = backend
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            self.high = max(self.high, self._backend.in_flight)
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_it_caps_the_calls_an_endpoint_sees_and_queues_the_rest(
    backends, balancers, channels
):
    backend = await backends("pod-a")
    limits = {"max_streams_per_server": 2, "queue_timeout_s": 60}
    balancer = await balancers(haproxy_config([backend], haproxy=limits))
    proxy = channels(balancer.listen_addresses[0])
    watermark = Watermark(backend)
    try:
        served = await asyncio.gather(*(unary(proxy, x_delay_ms="500") for _ in range(8)))
    finally:
        await watermark.stop()
    assert served == ["pod-a"] * 8
    assert watermark.high == 2


async def test_it_fails_calls_queued_past_the_queue_timeout_with_unavailable(
    backends, balancers, channels
):
    backend = await backends("pod-a")
    limits = {"max_streams_per_server": 2, "queue_timeout_s": 0.5}
    balancer = await balancers(haproxy_config([backend], haproxy=limits))
    proxy = channels(balancer.listen_addresses[0])
    watermark = Watermark(backend)
    results = await asyncio.gather(
        *(unary(proxy, x_delay_ms="4000") for _ in range(5)), return_exceptions=True
    )
    await watermark.stop()
    served = [r for r in results if r == "pod-a"]
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(served), len(errors)) == (2, 3), results
    assert {e.code() for e in errors} == {grpc.StatusCode.UNAVAILABLE}
    assert all("max_streams_per_server" in (e.details() or "") for e in errors), errors
    assert watermark.high == 2
    assert backend.calls == 2


# --- limits HAProxy cannot enforce --------------------------------------------------------


async def test_it_warns_once_at_start_about_a_message_limit_it_cannot_enforce(
    backends, balancers, caplog
):
    backend = await backends("pod-a")
    cfg = haproxy_config([backend], max_message_bytes=1024)
    balancer = await balancers(cfg)
    lines = [r.getMessage() for r in caplog.records if "max_message_bytes" in r.getMessage()]
    assert len(lines) == 1
    assert "not enforced with balancer.engine = 'haproxy'" in lines[0]
    assert balancer.clusters["echo"].endpoints["pod-a"].state is State.READY


def test_the_key_file_is_not_world_readable_even_while_written(tmp_path, pki):
    cfg = config_from_dict(
        {
            "balancer": {"engine": "haproxy"},
            "listeners": [{"address": "127.0.0.1:0", **listener_tls(pki)}],
            "clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]}}],
        },
        environ={},
    )
    old = os.umask(0)  # even a permissive umask leaves the key to its owner
    try:
        write_tls_files(cfg, str(tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "listener0.pem").stat().st_mode) == 0o600


def _run_check(tmp_path: Path, balancer_lines: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ballast.toml"
    path.write_text(
        f'[balancer]\nengine = "haproxy"\n{balancer_lines}\n'
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:1"]\n',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(path), "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_check_warns_in_one_line_about_limits_haproxy_cannot_enforce(tmp_path):
    result = _run_check(tmp_path, "max_message_bytes = 1024\nmax_in_flight_bytes = 65536\n")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "WARNING" in line
    assert "balancer.max_message_bytes = 1024 and balancer.max_in_flight_bytes = 65536" in line
    assert "not enforced with balancer.engine = 'haproxy'" in line


def test_check_is_quiet_about_the_default_limits(tmp_path):
    result = _run_check(tmp_path, "")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("haproxy", "message"),
    [
        ({"max_connections_per_peer": -1}, "max_connections_per_peer must be between 0"),
        ({"max_streams_per_server": 2**31}, "max_streams_per_server must be between 0"),
        ({"max_connections": "10"}, "haproxy.max_connections: expected an integer"),
        ({"queue_timeout_s": 0}, "queue_timeout_s must be between 0.001 and 86400"),
        ({"max_conections_per_peer": 1}, "did you mean 'max_connections_per_peer'?"),
    ],
)
def test_it_names_a_bad_limit(haproxy, message):
    data = {
        "balancer": {"engine": "haproxy"},
        "haproxy": haproxy,
        "clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]}}],
    }
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, environ={})
    assert message in str(caught.value)


def test_it_writes_tls_and_limits_into_a_config_haproxy_accepts(tmp_path, pki):
    data = {
        "balancer": {"engine": "haproxy"},
        "haproxy": {"max_connections": 1000, "max_connections_per_peer": 10,
                    "max_streams_per_server": 50, "queue_timeout_s": 2.5},
        "listeners": [{"address": "127.0.0.1:50051", **listener_tls(pki, mutual=True)}],
        "clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]},
                      **upstream_tls(pki, client=pki.client)}],
    }  # fmt: skip
    cfg = config_from_dict(data, environ={})
    write_tls_files(cfg, str(tmp_path))
    servers = {"echo": [Server("s1", "127.0.0.1:7001", "ready", 256)]}
    text = render(
        cfg, listen_addresses=["127.0.0.1:50051"], runtime_socket=str(tmp_path / "rt.sock"),
        policies={"echo": "round_robin"}, servers=servers, tls_dir=str(tmp_path),
    )  # fmt: skip
    tls_options = (
        f"ssl verify required ca-file {pki.ca.cert_file} alpn h2 sni str(localhost)"
        f" crt {tmp_path}/upstream0.pem"
    )
    for line in (
        f"bind 127.0.0.1:50051 proto h2 ssl crt {tmp_path}/listener0.pem alpn h2"
        f" verify required ca-file {pki.ca.cert_file}\n",
        "tcp-request connection reject if { sc0_conn_cur gt 10 }",
        "maxconn 1000",
        "timeout queue 2500ms",
        f"server tls-seed 127.0.0.1:1 proto h2 pool-purge-delay 1s maxconn 50 {tls_options}"
        " disabled",
        f"server s1 127.0.0.1:7001 proto h2 pool-purge-delay 1s maxconn 50 {tls_options}"
        " weight 256\n",
    ):
        assert line in text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text, encoding="utf-8")
    checked = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_it_reads_connections_per_peer_from_a_stick_table():
    reply = (
        "# table: listener0, type: ipv6, size:1048576, used:3\n"
        "0x55d0: key=::ffff:10.0.0.7 use=2 exp=0 conn_cur=2\n"
        "0x55d1: key=2001:db8::1 use=1 exp=0 conn_cur=1\n"
        "0x55d2: key=::ffff:10.0.0.8 use=0 exp=0 conn_cur=0\n"
    )
    assert parse_peers(reply) == [("10.0.0.7", 2), ("2001:db8::1", 1)]


class PeakRss:
    """The largest resident memory of a process, sampled."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.start_bytes = self.high_bytes = self._process.memory_info().rss
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            self.high_bytes = max(self.high_bytes, self._process.memory_info().rss)
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_it_relays_large_messages_holding_only_buffers_not_messages(backends, balancers):
    """What stands in for balancer.max_in_flight_bytes under HAProxy: it never holds a
    whole message, only its buffers per stream, so large messages cost it no memory."""
    backend = await backends("pod-a")
    balancer = await balancers(haproxy_config([backend]))
    size = 32 * 1024 * 1024
    limits = [
        ("grpc.max_send_message_length", 2 * size),
        ("grpc.max_receive_message_length", 2 * size),
    ]
    channel = grpc.aio.insecure_channel(balancer.listen_addresses[0], options=limits)
    peak = PeakRss(balancer.engine.pid)  # type: ignore[attr-defined]
    try:
        message = b"m" * size
        calls = [channel.unary_unary(be.UNARY)(message, timeout=120) for _ in range(4)]
        replies = await asyncio.gather(*calls)
    finally:
        await peak.stop()
        await channel.close()
    assert [len(r) for r in replies] == [size] * 4
    grown_mib = (peak.high_bytes - peak.start_bytes) / 2**20
    print(f"\nhaproxy RSS grew by {grown_mib:.1f} MiB relaying 4 x 32 MiB each way at once")
    assert grown_mib < 16
