"""Client connections to the balancer, counted per peer from channelz."""

from __future__ import annotations

import grpc
import grpc.aio

from tests.support import backend as be
from tests.support.balancing import config
from tests.support.waiting import wait_for

# Without a local subchannel pool, channels to one target share one connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


async def test_it_counts_each_client_connection_of_a_peer(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a]))
    target = balancer.listen_addresses[0]
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(3)]
    try:
        for channel in channels:
            await channel.unary_unary(be.UNARY)(b"x", timeout=5)
        assert balancer.connections_by_peer() == {"127.0.0.1": 3}
        await channels[0].close()
        await wait_for(
            lambda: balancer.connections_by_peer() == {"127.0.0.1": 2}, what="one connection gone"
        )
    finally:
        for channel in channels:
            await channel.close()


async def test_it_does_not_count_the_balancers_own_upstream_connections(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a]))
    assert balancer.connections_by_peer() == {}
