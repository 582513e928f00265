"""The ADS protocol as the server speaks it, driven by a raw stream (no gRPC xDS client)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2, load_report_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.load_stats.v3 import lrs_pb2
from google.rpc import status_pb2

from balancer.discovery import Add, Remove
from balancer.endpoint import Address, State
from balancer.server import Balancer
from balancer.xds.resources import CLUSTER, ENDPOINT, LISTENER
from tests.support import backend as be
from tests.support.balancing import config

pytestmark = pytest.mark.timeout(60)

NODE = base_pb2.Node(id="raw-1")


class Ads:
    """One raw ADS stream: `send` a request, `recv` the next response (or None on timeout)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self._responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.StreamAggregatedResources(self._iterate())
        # Reads in the background: a read cancelled by a timeout would cancel the stream.
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            self._responses.put_nowait(response)

    async def _iterate(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self._requests.get()

    def send(self, type_url: str, names: list[str], version: str = "", nonce: str = "",
             error: str | None = None) -> None:  # fmt: skip
        request = discovery_pb2.DiscoveryRequest(
            node=NODE, type_url=type_url, resource_names=names, version_info=version,
            response_nonce=nonce,
            error_detail=None if error is None else status_pb2.Status(code=3, message=error),
        )  # fmt: skip
        self._requests.put_nowait(request)

    async def recv(self, timeout_s: float = 5.0) -> discovery_pb2.DiscoveryResponse | None:
        try:
            return await asyncio.wait_for(self._responses.get(), timeout_s)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


@pytest.fixture
async def setup(backends, balancers) -> AsyncIterator[tuple[Balancer, Ads]]:
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    assert balancer.xds_address is not None
    async with grpc.aio.insecure_channel(balancer.xds_address) as channel:
        ads = Ads(channel)
        yield balancer, ads
        ads.close()


def _assignment(response: discovery_pb2.DiscoveryResponse) -> endpoint_pb2.ClusterLoadAssignment:
    (packed,) = response.resources
    assignment = endpoint_pb2.ClusterLoadAssignment()
    packed.Unpack(assignment)
    return assignment


async def test_it_sends_every_listener_to_a_wildcard_request_and_acks_stay_quiet(setup):
    balancer, ads = setup
    ads.send(LISTENER, [])
    first = await ads.recv()
    assert first is not None and first.type_url == LISTENER and len(first.resources) == 1

    ads.send(LISTENER, [], version=first.version_info, nonce=first.nonce)  # ACK
    assert await ads.recv(timeout_s=0.5) is None  # nothing changed: nothing sent
    (client,) = balancer.xds.clients()  # type: ignore[union-attr]
    assert client.node_id == "raw-1" and client.types[LISTENER].acked_version == "1"


async def test_it_pushes_one_update_for_a_burst_of_changes(setup):
    balancer, ads = setup
    ads.send(ENDPOINT, ["echo"])
    first = await ads.recv()
    assert first is not None
    ads.send(ENDPOINT, ["echo"], version=first.version_info, nonce=first.nonce)
    xds = balancer.xds
    assert xds is not None
    pushes = xds.publisher.pushes

    cluster = balancer.clusters["echo"]
    for weight in range(1, 51):  # 100 changes in one go
        cluster.set_weight("pod-a", weight)
        cluster.set_weight("pod-b", weight * 2)
    update = await ads.recv()

    assert update is not None and int(update.version_info) == int(first.version_info) + 1
    assert await ads.recv(timeout_s=0.3) is None  # one push, not a hundred
    assert xds.publisher.pushes == pushes + 1
    weights = {
        loc.locality.sub_zone: loc.load_balancing_weight.value
        for loc in _assignment(update).endpoints
    }
    assert weights == {"pod-a": 50, "pod-b": 100}


async def test_it_does_not_resend_a_nacked_version_and_ignores_stale_nonces(setup):
    balancer, ads = setup
    ads.send(CLUSTER, ["echo"])
    first = await ads.recv()
    assert first is not None
    ads.send(CLUSTER, ["echo"], version="", nonce=first.nonce, error="bad cluster")  # NACK
    assert await ads.recv(timeout_s=0.5) is None  # the same version is not sent again
    (client,) = balancer.xds.clients()  # type: ignore[union-attr]
    nack = client.pending_nacks()[CLUSTER]
    assert (nack.version, nack.message) == (first.version_info, "bad cluster")

    ads.send(CLUSTER, ["echo"], version=first.version_info, nonce="stale-nonce")
    assert await ads.recv(timeout_s=0.3) is None
    assert CLUSTER in client.pending_nacks()  # a stale nonce neither ACKs nor NACKs

    balancer.clusters["echo"].set_policy("least_request")  # CDS unchanged: no push
    balancer.clusters["echo"].set_weight("pod-a", 7)  # EDS changes; no EDS subscription
    assert await ads.recv(timeout_s=0.3) is None


async def test_it_answers_a_changed_subscription_at_once(setup):
    _, ads = setup
    ads.send(ENDPOINT, ["nope"])
    empty = await ads.recv()
    assert empty is not None and list(empty.resources) == []
    ads.send(ENDPOINT, ["echo"], version=empty.version_info, nonce=empty.nonce)
    named = await ads.recv()
    assert named is not None and _assignment(named).cluster_name == "echo"


async def test_it_marks_a_drained_endpoint_draining_with_weight_kept_above_zero(setup):
    balancer, ads = setup
    ads.send(ENDPOINT, ["echo"])
    first = await ads.recv()
    assert first is not None
    ads.send(ENDPOINT, ["echo"], version=first.version_info, nonce=first.nonce)
    balancer.clusters["echo"].drain("pod-a")
    balancer.clusters["echo"].set_weight("pod-b", 0)
    update = await ads.recv()
    assert update is not None

    sent = {
        loc.locality.sub_zone: (loc.lb_endpoints[0].health_status, loc.load_balancing_weight.value)
        for loc in _assignment(update).endpoints
    }
    draining = health_check_pb2.HealthStatus.DRAINING
    assert sent == {"pod-a": (draining, 1), "pod-b": (draining, 1)}


async def test_it_ramps_a_new_endpoints_weight_through_slow_start(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    slow_start = {"window_s": 2.0, "min_weight_percent": 10.0}
    balancer = await balancers(
        config([a], cluster={"slow_start": slow_start}, xds={"address": "127.0.0.1:0"})
    )
    await asyncio.sleep(2.1)  # pod-a is past its window: only the newcomer ramps
    assert balancer.xds_address is not None
    async with grpc.aio.insecure_channel(balancer.xds_address) as channel:
        ads = Ads(channel)
        ads.send(ENDPOINT, ["echo"])
        first = await ads.recv()
        assert first is not None
        ads.send(ENDPOINT, ["echo"], version=first.version_info, nonce=first.nonce)
        balancer.clusters["echo"].apply(Add((Address("127.0.0.1", b.port, pod_name="pod-b"),)))
        seen = []
        while not seen or seen[-1] < 100:
            update = await ads.recv(timeout_s=10)
            assert update is not None, f"no push after weights {seen}"
            ads.send(ENDPOINT, ["echo"], version=update.version_info, nonce=update.nonce)
            weights = {e.locality.sub_zone: e.load_balancing_weight.value
                       for e in _assignment(update).endpoints}  # fmt: skip
            seen.append(weights.get("pod-b", 0))
        ads.close()

    assert seen[0] < 100 and len(seen) >= 2  # pushed as it ramped, not only at the end
    assert seen == sorted(seen)


async def test_it_sends_an_endpoint_ejected_by_the_proxys_traffic_as_unhealthy(setup):
    balancer, ads = setup
    ads.send(ENDPOINT, ["echo"])
    first = await ads.recv()
    assert first is not None
    ads.send(ENDPOINT, ["echo"], version=first.version_info, nonce=first.nonce)
    unavailable = (("x-fail-code", "UNAVAILABLE"),)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as proxy:
        unary = proxy.unary_unary(be.UNARY)
        for _ in range(20):  # round robin: 10 each, 5 in a row eject one pod
            with contextlib.suppress(grpc.aio.AioRpcError):
                await unary(b"x", metadata=unavailable, timeout=5)
            if any(
                ep.state is State.EJECTED for ep in balancer.clusters["echo"].endpoints.values()
            ):
                break
    (ejected,) = [e.id for e in balancer.clusters["echo"].endpoints.values()
                  if e.state is State.EJECTED]  # fmt: skip

    update = await ads.recv()
    assert update is not None
    sent = {e.locality.sub_zone: e.lb_endpoints[0].health_status
            for e in _assignment(update).endpoints}  # fmt: skip
    assert sent[ejected] == health_check_pb2.HealthStatus.UNHEALTHY
    assert set(sent.values()) == {
        health_check_pb2.HealthStatus.UNHEALTHY,
        health_check_pb2.HealthStatus.HEALTHY,
    }


def _report(cluster: str, endpoint_id: str, issued: int) -> lrs_pb2.LoadStatsRequest:
    locality = load_report_pb2.UpstreamLocalityStats(
        locality=base_pb2.Locality(sub_zone=endpoint_id),
        total_issued_requests=issued,
        total_successful_requests=issued,
        total_requests_in_progress=1,
    )
    stats = load_report_pb2.ClusterStats(cluster_name=cluster, upstream_locality_stats=[locality])
    return lrs_pb2.LoadStatsRequest(node=NODE, cluster_stats=[stats])


async def test_it_counts_only_known_endpoints_and_forgets_removed_ones(setup):
    balancer, _ = setup
    loads = balancer.xds.loads  # type: ignore[union-attr]
    loads.record(1, _report("echo", "pod-a", 5))
    loads.record(1, _report("echo", "pod-a", 3))
    loads.record(1, _report("echo", "made-up-pod", 1000))
    loads.record(1, _report("made-up-cluster", "pod-a", 1000))
    counted = loads.counters("echo", "pod-a")
    assert (counted.issued, counted.succeeded, counted.in_progress) == (8, 8, 1)
    assert loads.counters("echo", "made-up-pod").issued == 0

    balancer.clusters["echo"].apply(Remove(("pod-a",)))
    loads.prune()
    assert loads.counters("echo", "pod-a").issued == 0
    assert loads.counters("echo", "pod-a").in_progress == 0
    loads.forget_stream(1)


async def test_it_ignores_a_type_it_does_not_serve(setup):
    balancer, ads = setup
    ads.send("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", ["x"])
    ads.send(CLUSTER, ["echo"])
    answer = await ads.recv()
    assert answer is not None and answer.type_url == CLUSTER  # the unserved type got nothing
    (client,) = balancer.xds.clients()  # type: ignore[union-attr]
    assert set(client.types) == {CLUSTER}
