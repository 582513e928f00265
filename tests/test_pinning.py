"""The pinning detector on real pods: `python -m demo.workload` processes serving channelz,
a real balancer in front of them with a client calling through it, and clients that
bypass it, each holding one long-lived connection straight to one pod (in their own
processes, tests/support/pinning.py). The collector reads the pods' channelz and the
balancer's snapshots, as it does in the dashboard."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc.aio
import pytest
from grpc_channelz.v1 import channelz, channelz_pb2
from grpc_channelz.v1.channelz import ChannelzServicer

from balancer import connections
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.server import Balancer
from dashboard.collector.frames import ServiceFrame
from dashboard.collector.imbalance import WINDOW_S
from dashboard.collector.pinning import (
    PinningReader,
    SocketRead,
    Whose,
    host_of,
    pinning_frame,
    read_channelz,
    shares_of,
)
from dashboard.collector.pinning import reader as pinning_reader
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from demo.loadgen import ClientSpec, LoadGenerator
from demo.scene import SERVICE, Scene, SceneOptions
from platforms.base import PodFacts
from tests.support import balancing
from tests.support.backend import Backend, start_backend
from tests.support.pinning import PinnedClients, pin_clients

pytestmark = pytest.mark.timeout(180)

SHARE = re.compile(r"(\d+) % of pod")


class Rig:
    """Two pods behind a balancer, a client through it, the collector watching."""

    def __init__(self, scene: Scene, collector: Collector, ballast: LoadGenerator) -> None:
        self.scene = scene
        self.collector = collector
        self.ballast = ballast
        self.pinned: list[PinnedClients] = []
        self.started_at = time.monotonic()

    async def pods(self) -> list[PodFacts]:
        return sorted(await self.scene.platform.list_pods(SERVICE), key=lambda p: p.name)

    def frame(self) -> Any:
        """The collector's newest frame (built by its ticker: building one here would add
        an interval to its imbalance windows)."""
        newest = self.collector.history.latest(SERVICE, 1)
        return json.loads(newest[0]) if newest else {}

    def pinning(self) -> Any:
        """The newest frame's `pinning` with every pod's connections, as the API gives it
        (frames carry only the pinned pod's)."""
        frame = self.frame()
        if "pinning" not in frame:
            return None
        connections = self.collector.pinning.connections
        return pinning_frame(frame, connections, shares_of(frame["pinning"]))

    async def pinning_when(self, predicate: Any, what: str, timeout_s: float = 60) -> Any:
        """Reads the pods' channelz until `predicate(self.pinning())` holds; returns it."""
        found: list[Any] = []

        async def holds() -> bool:
            await self.collector.read_channelz()
            pinning = self.pinning()
            if pinning is not None and predicate(pinning):
                found.append(pinning)
            return bool(found)

        deadline = time.monotonic() + timeout_s
        while not await holds():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.frame()}"
            await asyncio.sleep(1.0)
        return found[0]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    scene = Scene(SceneOptions(pods=2, clients_per_group=0, rate_per_client=1, seed=5))
    await scene.start()
    assert scene.balancer.admin_address is not None
    replica = ReplicaTarget("b1", scene.balancer.admin_address, scene.admin_token)
    config = CollectorConfig(
        [replica], {SERVICE: ServiceTarget(SERVICE, SERVICE)}, interval_s=0.5, pods_interval_s=0.5
    )

    async def publish(frame: ServiceFrame) -> None:
        pass

    collector = Collector(config, publish, platform=scene.platform, rng=random.Random(1))
    address = scene.balancer.listen_addresses[0]
    ballast = LoadGenerator([ClientSpec("via-ballast", address, 20.0)], rng=random.Random(2))
    await collector.start()
    await ballast.start()
    made = Rig(scene, collector, ballast)
    try:
        yield made
    finally:
        for pinned in made.pinned:
            await pinned.stop()
        await ballast.stop(grace_s=1.0)
        await collector.stop()
        await scene.stop()


def pod_of(pinning: Any, name: str) -> Any:
    return next(p for p in pinning["pods"] if p["pod"] == name)


def _busy_clients(pod: Any) -> int:
    return sum(1 for c in pod.get("conns", []) if c["calls_s"])


async def test_it_names_the_pinned_pod_its_bypassing_connections_and_their_share(rig: Rig) -> None:
    first, second = await rig.pods()
    assert first.address is not None
    rig.pinned.append(await pin_clients(first.address, 2, 20.0))
    rig.pinned.append(await pin_clients(first.address, 1, 20.0))
    # The shares are means over the imbalance window: wait for one full of pinned calls.
    steady_at = time.monotonic() + WINDOW_S + 2

    def named(pinning: Any) -> bool:
        pinned = pinning["pinned"] == first.name and time.monotonic() > steady_at
        return pinned and _busy_clients(pod_of(pinning, first.name)) == 3

    pinning = await rig.pinning_when(named, "a finding about the pinned pod's 3 connections")
    text = pinning["finding"]
    assert f"pod {first.name}'s calls come from 3" in text, text
    assert "bypass Ballast" in text and "MAX_CONNECTION_AGE" in text, text
    # 60 calls/s over the pinned connections; 10 of Ballast's (20/s over two pods) and its
    # health checks and the platform's probes (~3/s) over its own: 82 %, ±15 over a second.
    match = SHARE.search(text)
    assert match is not None, text
    assert 67 <= int(match[1]) <= 97, text
    pinned = pod_of(pinning, first.name)
    assert pinned["bypass_share"] == pytest.approx(0.86, abs=0.1)
    assert all(c["origin"] == "bypass" for c in pinned["conns"])
    assert pinned["ballast_conns"] >= 1  # Ballast's connection is there, and not a client's
    # The pod only Ballast calls holds its connection, and no client's.
    other = pod_of(pinning, second.name)
    assert other["ballast_conns"] >= 1 and other["client_conns"] == 0, other
    ballast_peers = set(rig.collector.whose().ballast)
    assert ballast_peers and not ballast_peers & {c["peer"] for c in pinned["conns"]}
    # Frames carry the pinned pod's connections only: they go to every page each second.
    carried = rig.frame()["pinning"]
    if carried["pinned"] == first.name:
        assert "conns" in pod_of(carried, first.name)
    assert "conns" not in pod_of(carried, second.name)


async def test_it_forgets_a_connection_that_closed(rig: Rig) -> None:
    first, _ = await rig.pods()
    assert first.address is not None
    rig.pinned.append(await pin_clients(first.address, 2, 20.0))
    crashing = await pin_clients(first.address, 1, 20.0)
    rig.pinned.append(crashing)
    await rig.pinning_when(
        lambda p: pod_of(p, first.name).get("client_conns") == 3, "three client connections"
    )
    crashing.kill()
    pinning = await rig.pinning_when(
        lambda p: pod_of(p, first.name).get("client_conns") == 2, "the killed client's gone"
    )
    assert len(pod_of(pinning, first.name)["conns"]) == 2


async def test_it_counts_no_bypass_when_every_call_goes_through_ballast(rig: Rig) -> None:
    pods = await rig.pods()

    def read(pinning: Any) -> bool:
        return all(pod_of(pinning, p.name).get("ballast_conns") for p in pods) and all(
            pod_of(pinning, p.name).get("bypass_share") is not None for p in pods
        )

    await rig.pinning_when(read, "every pod's connections and counts")
    # Once the imbalance window holds no interval from before Ballast's first rates (a
    # pod's own count alone is all bypass), and then over a whole window: never a
    # finding, never a client.
    await asyncio.sleep(max(0.0, rig.started_at + WINDOW_S + 2 - time.monotonic()))
    until = time.monotonic() + WINDOW_S
    while time.monotonic() < until:
        pinning = await rig.pinning_when(read, "every pod's connections and counts")
        assert pinning["finding"] is None, pinning
        for pod in pods:
            assert pod_of(pinning, pod.name)["client_conns"] == 0, pinning
            # The collector's own channelz reads (each second here, ~5 calls a pod) are not
            # counted either: they would make a third of its calls. (A pod's count and
            # Ballast's are taken over intervals that do not line up, and a bypass under
            # 0 counts as 0: at 10 calls/s a pod that only Ballast calls reads up to ~20 %.)
            assert pod_of(pinning, pod.name)["bypass_share"] < 0.3, pinning


async def test_it_shows_no_connections_for_a_pod_without_channelz_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = await start_backend("plain")  # a gRPC server with no channelz service
    reader = PinningReader()
    pod = PodFacts("plain", "plain", backend.address, "Running", True, 0, None)
    try:
        with caplog.at_level(logging.INFO, logger="dashboard.collector.pinning"):
            for _ in range(3):
                await reader.read([pod], Whose(set()))
        assert reader.connections("plain") is None
        said = [r.getMessage() for r in caplog.records if "no channelz" in r.getMessage()]
        assert len(said) == 1 and "UNIMPLEMENTED" in said[0], said
    finally:
        await reader.close()
        await backend.stop()
    frame = {
        "pods": [
            {"pod": "plain", "rps": 10.0, "pod_rps": 70.0},
            {"pod": "other", "rps": 10.0, "pod_rps": 10.0},
        ],
        "bypass_imbalance": {"flagged": True, "busiest": "plain", "max_mean": 2.0},
    }
    pinning = pinning_frame(frame, reader.connections)
    assert pinning["pinned"] == "plain"
    assert pinning["finding"] is not None
    assert pinning["finding"] == (
        "86 % of pod plain's calls bypass Ballast, 2.0× the pods' mean of such calls; the"
        " connections behind them are not shown: the pod's channelz has not answered. Point"
        " those clients at Ballast or set max connection age on the server"
        " (MAX_CONNECTION_AGE)."
    )
    assert "conns" not in pod_of(pinning, "plain")


# ---- the finding's words and the reader's bookkeeping, on figures given -----------------

SKEWED = {"flagged": True, "busiest": "a", "max_mean": 1.9}


def _frame(a_own: float, bypass: dict[str, Any] = SKEWED, px: float = 0.0) -> dict[str, Any]:
    """Pod a counts `a_own` calls/s, Ballast sent it 10 (and proxyless clients `px`);
    pod b gets only Ballast's 10."""
    a = {"pod": "a", "rps": 10.0, "pod_rps": a_own, **({"px_rps": px} if px else {})}
    return {"pods": [a, {"pod": "b", "rps": 10.0, "pod_rps": 10.0}], "bypass_imbalance": bypass}


def _reader(whose: Whose, *peers_calls: tuple[str, int, int]) -> PinningReader:
    """A reader that read pod a twice, 12 s apart (at 100 s and 112 s); each peer's calls
    (first read, second read)."""
    reader = PinningReader(clock=lambda: 112.0)
    for at_s, which in ((100.0, 1), (112.0, 2)):
        socks = [
            SocketRead(i, peer, calls[which - 1]) for i, (peer, *calls) in enumerate(peers_calls)
        ]
        reader.observe("a", socks, at_s, whose)
    return reader


def test_it_raises_no_finding_while_the_bypassing_calls_are_a_small_share() -> None:
    # 2 of its 12 calls/s bypass (17 %): under the 25 % that would matter.
    assert pinning_frame(_frame(12.0), lambda pod: None)["finding"] is None
    assert pinning_frame(_frame(30.0), lambda pod: None)["pinned"] == "a"  # 67 %


def test_it_raises_no_finding_while_the_bypassing_calls_are_even() -> None:
    even = {"flagged": False, "busiest": "a", "max_mean": 1.1}
    assert pinning_frame(_frame(80.0, even), lambda pod: None)["finding"] is None


def test_it_says_how_long_the_connections_have_been_there_at_least() -> None:
    whose = Whose({"10.0.0.9:4000"})
    reader = _reader(whose, ("10.0.0.9:4000", 10, 60), ("10.1.0.5:5000", 500, 800))
    text = pinning_frame(_frame(70.0), reader.connections)["finding"]
    # 300 calls over 12 s on the client's connection, 50 on Ballast's: 86 %.
    assert text == (
        "86 % of pod a's calls come from 1 connection that bypass Ballast (oldest ≥ 12 s);"
        " point those clients at Ballast or set max connection age on the server"
        " (MAX_CONNECTION_AGE)."
    )


def test_it_says_when_a_connections_host_also_runs_a_proxyless_client() -> None:
    whose = Whose({"10.0.0.9:4000"}, xds_hosts={"10.1.0.5"})
    reader = _reader(
        whose, ("10.0.0.9:4000", 10, 60), ("10.1.0.5:5000", 0, 300), ("10.2.0.1:6000", 0, 200)
    )
    pinning = pinning_frame(_frame(70.0, px=5.0), reader.connections)
    assert [c["origin"] for c in pod_of(pinning, "a")["conns"]] == ["client", "bypass"]
    assert pinning["finding"] is not None
    assert pinning["finding"].startswith(
        "79 % of pod a's calls bypass Ballast, 1.9× the pods' mean of such calls; it holds 2"
        " client connections besides Ballast's (oldest ≥ 12 s), 1 of them from hosts that also"
        " run proxyless clients, so the bypassing ones cannot be told apart by address."
    )


def test_it_rests_on_the_counts_when_ballasts_connections_are_not_known() -> None:
    reader = _reader(Whose(set(), complete=False), ("10.1.0.5:5000", 0, 300))
    pinning = pinning_frame(_frame(70.0), reader.connections)
    assert pod_of(pinning, "a")["conns"][0]["origin"] == "unknown"
    assert pinning["finding"] is not None
    assert "or its engine is HAProxy" in pinning["finding"]


def test_it_says_no_connection_is_named_while_none_has_been_open_long_enough() -> None:
    # Only Ballast's connection so far: the clients' are short-lived, or not seen long yet.
    reader = _reader(Whose({"10.0.0.9:4000"}), ("10.0.0.9:4000", 10, 60))
    text = pinning_frame(_frame(70.0), reader.connections)["finding"]
    assert text is not None
    assert "no client connection open for 8 s or more carried calls" in text
    assert "short-lived ones are not" in text


# ---- the balancer's side: the local addresses of its upstream connections -------------


def _peers_of_port(port: int) -> set[str]:
    """The peers ("ip:port") of the connections this process's servers accepted on `port`,
    as channelz on the server side lists them."""
    peers = set()
    for server_id in connections.server_ids():
        request = channelz_pb2.GetServerSocketsRequest(server_id=server_id)
        reply = ChannelzServicer.GetServerSockets(request, connections._Context())
        for ref in reply.socket_ref if reply is not None else ():
            got = ChannelzServicer.GetSocket(
                channelz_pb2.GetSocketRequest(socket_id=ref.socket_id), connections._Context()
            )
            if got is not None and got.socket.local.tcpip_address.port == port:
                peers.add(connections.tcpip_address(got.socket.remote))
    return peers


@pytest.mark.parametrize("engine", ["embedded", "haproxy"])
async def test_the_balancer_reports_the_addresses_its_pods_see_for_its_connections(
    backends: Callable[..., Awaitable[Backend]],
    balancers: Callable[..., Awaitable[Balancer]],
    engine: str,
) -> None:
    """Its upstream channels' connections (health checks use them under every engine);
    HAProxy's own connections are not among them, and the snapshot says so."""
    pod = await backends("pod-a")
    balancer = await balancers(balancing.config([pod], admin={}, engine=engine, shutdown_grace_s=1))
    assert balancer.admin_address is not None
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        auth = (("authorization", f"Bearer {balancing.ADMIN_TOKEN}"),)
        seen: list[admin_pb2.Snapshot] = []

        async def reported() -> bool:
            snapshot = await admin.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=auth)
            seen[:] = [snapshot]
            return bool(snapshot.clusters[0].endpoints[0].upstream_local_addresses)

        deadline = time.monotonic() + 20
        while not await reported():
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.2)
    (snapshot,) = seen
    # The embedded engine calls through these connections alone; HAProxy has its own.
    assert snapshot.upstream_addresses_complete is (engine == "embedded")
    addresses = set(snapshot.clusters[0].endpoints[0].upstream_local_addresses)
    port = int(pod.address.rpartition(":")[2])
    assert addresses <= _peers_of_port(port)


# ---- bounds ------------------------------------------------------------------------------


async def test_it_reads_at_most_so_many_sockets_of_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    server = grpc.aio.server()
    channelz.add_channelz_servicer(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # Five clients, each its own connection (a local subchannel pool each).
    clients = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=(("grpc.use_local_subchannel_pool", 1),)
        )
        for _ in range(5)
    ]
    try:
        for client in clients:
            await client.channel_ready()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as reading:
            assert len(await read_channelz(reading)) == 6  # the five and the reader's own
            monkeypatch.setattr(pinning_reader, "MAX_SOCKETS_READ", 3)
            assert len(await read_channelz(reading)) == 3
    finally:
        for client in clients:
            await client.close()
        await server.stop(None)


def test_a_frame_lists_the_ten_busiest_connections_of_a_pod() -> None:
    peers = [(f"10.1.0.{i}:5000", 0, 10 * i) for i in range(1, 41)]
    reader = _reader(Whose(set()), *peers)
    pinning = pinning_frame(_frame(70.0), reader.connections)
    pod = pod_of(pinning, "a")
    assert pod["client_conns"] == 40
    assert [c["peer"] for c in pod["conns"]] == [f"10.1.0.{i}:5000" for i in range(40, 30, -1)]


def test_it_reads_the_host_of_a_pods_peer_and_of_an_xds_clients_peer() -> None:
    assert host_of("127.0.0.1:5") == "127.0.0.1"
    assert host_of("[::1]:5") == "::1"
    assert host_of("ipv4:10.0.0.7:41000") == "10.0.0.7"  # grpc's context.peer()
    assert host_of("ipv6:[fd00::7]:41000") == "fd00::7"
