"""`[balancer] max_connection_age_s`: the listener sends GOAWAY to old client connections.

Behind an L4 Service a client's connection is pinned to one balancer replica for
as long as it lives, the seed problem one level up; an age makes clients
reconnect, and so spread over the replicas. The client's own channel is watched
through channelz (a new socket id is a new TCP connection), and two replicas behind
the demo's L4 Service show where the client's connections went.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_channelz.v1 import channelz_pb2
from grpc_channelz.v1.channelz import ChannelzServicer

from balancer.config import config_from_dict
from balancer.endpoint import Address
from balancer.listen import connection_age_options
from demo.l4 import L4Service
from tests.support import backend as be
from tests.support.balancing import config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:7001"]\n'


class _Context:
    """channelz's static methods want a context only to report a missing id."""

    def set_code(self, code: object) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass


def _client_socket_ids(target: str) -> set[int]:
    """Ids of the TCP connections this process's channels to `target` hold now."""
    ids: set[int] = set()
    channels = ChannelzServicer.GetTopChannels(
        channelz_pb2.GetTopChannelsRequest(start_channel_id=0), _Context()
    )
    for channel in channels.channel:
        if channel.data.target not in (target, f"dns:///{target}"):
            continue
        for ref in channel.subchannel_ref:
            request = channelz_pb2.GetSubchannelRequest(subchannel_id=ref.subchannel_id)
            subchannel = ChannelzServicer.GetSubchannel(request, _Context())
            if subchannel is None:  # closed between the listing and the look-up
                continue
            ids.update(s.socket_id for s in subchannel.subchannel.socket_ref)
    return ids


async def _calls_over(channel: grpc.aio.Channel, target: str, duration_s: float) -> set[int]:
    """Calls for `duration_s`, each of which must succeed; returns every connection seen."""
    seen: set[int] = set()
    unary = channel.unary_unary(be.UNARY)
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        # wait_for_ready: a call that meets the GOAWAY waits for the new connection rather
        # than failing with UNAVAILABLE (grpc-go#2767), as a client of such a server should.
        assert await unary(b"ping", wait_for_ready=True, timeout=5) == b"ping"
        seen |= _client_socket_ids(target)
    return seen


async def test_it_closes_a_client_connection_after_the_age_and_calls_go_on(backends, balancers):
    backend = await backends("pod-a")
    balancer = await balancers(
        config([backend], max_connection_age_s=0.3, max_connection_age_grace_s=1.0)
    )
    target = balancer.listen_addresses[0]
    async with grpc.aio.insecure_channel(target) as channel:
        seen = await _calls_over(channel, target, duration_s=2.0)
    # 0.3 s ± 10 % over 2 s: several connections one after another, every call answered.
    assert len(seen) >= 3, f"connections seen: {sorted(seen)}"
    assert backend.calls >= len(seen)


async def test_it_keeps_a_client_connection_without_an_age(backends, balancers):
    backend = await backends("pod-a")
    balancer = await balancers(config([backend]))
    target = balancer.listen_addresses[0]
    async with grpc.aio.insecure_channel(target) as channel:
        seen = await _calls_over(channel, target, duration_s=1.0)
    assert len(seen) == 1


async def _replicas_behind_l4(backends, balancers, **balancer: Any) -> L4Service:
    """Two balancer replicas behind an L4 Service (a replica per TCP connection, picked at
    random as kube-proxy does, seeded), in front of one backend; started."""
    backend = await backends("pod-a")
    replicas = [await balancers(config([backend], **balancer)) for _ in range(2)]
    addresses = []
    for i, replica in enumerate(replicas):
        host, port = replica.listen_addresses[0].rsplit(":", 1)
        addresses.append(Address(host, int(port), f"replica-{i}"))
    l4 = L4Service(addresses, rng=random.Random(7))
    await l4.start()
    return l4


def _connections_per_replica(l4: L4Service) -> list[int]:
    return [b.total_connections for b in l4.snapshot().backends]


async def test_it_spreads_one_client_over_the_replicas_behind_an_l4_service(backends, balancers):
    l4 = await _replicas_behind_l4(backends, balancers, max_connection_age_s=0.2)
    try:
        async with grpc.aio.insecure_channel(l4.address) as channel:
            unary = channel.unary_unary(be.UNARY)
            deadline = time.monotonic() + 30
            # Every call answered while the client's connection is replaced, until the
            # L4 Service has sent a connection of it to each replica.
            while min(_connections_per_replica(l4)) == 0:
                assert time.monotonic() < deadline, _connections_per_replica(l4)
                assert await unary(b"ping", wait_for_ready=True, timeout=5) == b"ping"
    finally:
        await l4.stop()


async def test_it_pins_one_client_to_one_replica_without_an_age(backends, balancers):
    l4 = await _replicas_behind_l4(backends, balancers)
    try:
        async with grpc.aio.insecure_channel(l4.address) as channel:
            unary = channel.unary_unary(be.UNARY)
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                assert await unary(b"ping", wait_for_ready=True, timeout=5) == b"ping"
            assert sorted(_connections_per_replica(l4)) == [0, 1]
    finally:
        await l4.stop()


def test_it_gives_grpc_the_age_and_grace_in_milliseconds():
    options = connection_age_options(config([], max_connection_age_s=300))
    assert options == [("grpc.max_connection_age_ms", 300_000)]
    both = config([], max_connection_age_s=0.0004, max_connection_age_grace_s=30)
    assert connection_age_options(both) == [
        ("grpc.max_connection_age_ms", 1),
        ("grpc.max_connection_age_grace_ms", 30_000),
    ]


def test_it_reads_the_keys_from_the_balancer_table():
    data: dict[str, Any] = {
        "balancer": {"max_connection_age_s": 600, "max_connection_age_grace_s": 30},
        "clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:7001"]}}],
    }
    loaded = config_from_dict(data, environ={})
    assert (loaded.max_connection_age_s, loaded.max_connection_age_grace_s) == (600.0, 30.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_connection_age_s = 0", "balancer.max_connection_age_s must be a positive number"),
        ("max_connection_age_s = -5", "balancer.max_connection_age_s must be a positive number"),
        ("max_connection_age_s = nan", "balancer.max_connection_age_s: expected a finite number"),
        ("max_connection_age_s = inf", "balancer.max_connection_age_s: expected a finite number"),
        ("max_connection_age_s = 3e6", "at most 2147483 (gRPC's largest), got 3000000.0"),
        ('max_connection_age_s = "5m"', "balancer.max_connection_age_s: expected a number"),
        (
            "max_connection_age_s = 60\nmax_connection_age_grace_s = 0",
            "balancer.max_connection_age_grace_s must be a positive number",
        ),
        (
            "max_connection_age_grace_s = 10",
            "max_connection_age_grace_s is the grace after max_connection_age_s",
        ),
    ],
)
def test_it_check_refuses_a_bad_connection_age_in_one_line(tmp_path, text, fragment):
    path = tmp_path / "ballast.toml"
    path.write_text(f"[balancer]\n{text}\n{CLUSTER}", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(path), "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
