"""The admin gRPC API, driven over a real connection to a real balancer and backends."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from balancer.admin import generate
from balancer.admin.messages import STATE_MESSAGES
from balancer.admin.server import AdminServer
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import AdminConfig, config_from_dict
from balancer.endpoint import State
from balancer.server import Balancer, ListenError
from balancer.stats import LATENCY_BOUNDS_MS
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.sockets import taken_port
from tests.support.waiting import wait_for

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
READY = admin_pb2.ENDPOINT_STATE_READY
DRAINING = admin_pb2.ENDPOINT_STATE_DRAINING
DRAINED = admin_pb2.ENDPOINT_STATE_DRAINED


@dataclass
class Setup:
    a: Backend
    b: Backend
    balancer: Balancer
    admin: admin_pb2_grpc.AdminStub
    admin_channel: grpc.aio.Channel
    proxy: grpc.aio.Channel

    async def call(self, payload: bytes = b"ping", **metadata: str) -> str:
        """One unary call through the balancer; returns the name of the backend that served it."""
        md = [(k.replace("_", "-"), v) for k, v in metadata.items()]
        call = self.proxy.unary_unary(be.UNARY)(payload, metadata=md, timeout=5)
        await call
        return str(dict(await call.initial_metadata())["x-backend"])

    async def served_by(self, n: int) -> Counter[str]:
        return Counter([await self.call() for _ in range(n)])

    async def snapshot(self, *clusters: str) -> admin_pb2.Snapshot:
        request = admin_pb2.GetSnapshotRequest(clusters=clusters)
        snapshot: admin_pb2.Snapshot = await self.admin.GetSnapshot(request, metadata=AUTH)
        return snapshot

    async def endpoint(self, endpoint_id: str) -> admin_pb2.EndpointSnapshot:
        (cluster,) = (await self.snapshot()).clusters
        return next(ep for ep in cluster.endpoints if ep.endpoint_id == endpoint_id)


@pytest.fixture
async def setup(
    backends: Callable[..., Awaitable[Backend]], balancers: Callable[..., Awaitable[Balancer]]
) -> AsyncIterator[Setup]:
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], admin={}))
    assert balancer.admin_address is not None
    admin_channel = grpc.aio.insecure_channel(balancer.admin_address)
    proxy = grpc.aio.insecure_channel(balancer.listen_addresses[0])
    yield Setup(a, b, balancer, admin_pb2_grpc.AdminStub(admin_channel), admin_channel, proxy)
    await admin_channel.close()
    await proxy.close()


async def _rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# --- generated code -------------------------------------------------------------------------


def test_it_has_current_generated_code(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        relative = path.relative_to(tmp_path)
        checked_in = generate.ROOT / relative
        assert checked_in.read_bytes() == path.read_bytes(), (
            f"{relative} is out of date: run `make protos` and commit the result"
        )


def test_it_maps_every_endpoint_state_to_the_proto_enum() -> None:
    assert set(STATE_MESSAGES) == set(State)
    names = {admin_pb2.EndpointState.Name(v) for v in STATE_MESSAGES.values()}
    assert names == {f"ENDPOINT_STATE_{s.value}" for s in State}


# --- authentication and binding -------------------------------------------------------------


async def test_it_rejects_a_call_without_a_token(setup: Setup) -> None:
    err = await _rpc_error(setup.admin.ListClusters(admin_pb2.ListClustersRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no token" in err.details()
    assert "authorization: Bearer <token>" in err.details()


@pytest.mark.parametrize(
    "value", [f"Bearer {ADMIN_TOKEN}x", "Bearer wrong-token-0123456789", f"Basic {ADMIN_TOKEN}"]
)
async def test_it_rejects_a_wrong_token(setup: Setup, value: str) -> None:
    call = setup.admin.ListClusters(
        admin_pb2.ListClustersRequest(), metadata=(("authorization", value),)
    )
    err = await _rpc_error(call)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in err.details()


async def test_it_rejects_a_watch_without_a_token(setup: Setup) -> None:
    call = setup.admin.WatchSnapshots(admin_pb2.WatchSnapshotsRequest(interval_ms=100))
    err = await _rpc_error(call.read())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_it_accepts_the_right_token(setup: Setup) -> None:
    response = await setup.admin.ListClusters(admin_pb2.ListClustersRequest(), metadata=AUTH)
    assert [c.name for c in response.clusters] == ["echo"]


async def test_it_answers_health_checks_without_a_token(setup: Setup) -> None:
    stub = health_pb2_grpc.HealthStub(setup.admin_channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service="ballast.admin.v1.Admin"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_it_serves_reflection_to_token_holders_only(setup: Setup) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(setup.admin_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]), metadata=AUTH)]
    services = {s.name for s in responses[0].list_services_response.service}
    assert "ballast.admin.v1.Admin" in services
    err = await _rpc_error(stub.ServerReflectionInfo(iter([request])).read())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_it_binds_to_loopback_unless_configured(setup: Setup) -> None:
    assert AdminConfig(token=ADMIN_TOKEN).address == "127.0.0.1:9901"
    data = {"clusters": [{"name": "echo"}], "admin": {"token": ADMIN_TOKEN}}
    assert config_from_dict(data, environ={}).admin.address == "127.0.0.1:9901"
    assert setup.balancer.admin_address is not None
    assert setup.balancer.admin_address.startswith("127.0.0.1:")
    assert not setup.balancer.admin_address.endswith(":0")


async def test_it_takes_the_token_from_the_environment() -> None:
    data = {"clusters": [{"name": "echo"}], "admin": {}}
    environ = {"BALLAST_ADMIN_TOKEN": "from-the-environment-42"}
    assert config_from_dict(data, environ).admin.token == "from-the-environment-42"


# --- reading --------------------------------------------------------------------------------


async def test_it_lists_clusters_and_endpoints(setup: Setup) -> None:
    response = await setup.admin.ListClusters(admin_pb2.ListClustersRequest(), metadata=AUTH)
    (cluster,) = response.clusters
    assert (cluster.name, cluster.policy) == ("echo", "round_robin")
    rows = {(e.endpoint_id, e.address, e.pod_name, e.state, e.weight) for e in cluster.endpoints}
    assert rows == {
        ("pod-a", setup.a.address, "pod-a", READY, 100),
        ("pod-b", setup.b.address, "pod-b", READY, 100),
    }


async def test_it_counts_calls_in_the_snapshot(setup: Setup) -> None:
    payload = b"p" * 1000
    for _ in range(7):
        await setup.call(payload)
    with pytest.raises(grpc.aio.AioRpcError):
        await setup.call(payload, x_fail_code="NOT_FOUND")
    snapshot = await setup.snapshot()

    assert snapshot.balancer_id == "test"
    assert snapshot.taken_at_unix_ms >= snapshot.started_at_unix_ms > 0
    assert list(snapshot.latency_bounds_ms) == list(LATENCY_BOUNDS_MS)
    (cluster,) = snapshot.clusters
    assert (cluster.requests_total, cluster.in_flight, cluster.ready_endpoints) == (8, 0, 2)
    by_id = {ep.endpoint_id: ep for ep in cluster.endpoints}
    assert sum(ep.requests_by_code["OK"] for ep in by_id.values()) == 7
    assert sum(ep.requests_by_code["NOT_FOUND"] for ep in by_id.values()) == 1
    for backend in (setup.a, setup.b):
        ep = by_id[backend.name]
        assert ep.requests_total == backend.calls
        assert ep.bytes_received == 1000 * backend.calls
        assert ep.bytes_sent == 1000 * ep.requests_by_code["OK"]  # the echo, not the failure
        assert ep.latency.count == backend.calls == sum(ep.latency.counts)
        assert len(ep.latency.counts) == len(LATENCY_BOUNDS_MS) + 1
        assert ep.latency.sum_ms > 0
        assert (ep.weight, ep.effective_weight, ep.in_flight) == (100, 100.0, 0)
        assert ep.state_since_unix_ms <= snapshot.taken_at_unix_ms
        assert not ep.HasField("drain_deadline_unix_ms")
    assert {(c.peer, c.count) for c in snapshot.connections} == {("127.0.0.1", 1)}


async def test_it_shows_in_flight_calls(setup: Setup) -> None:
    slow = setup.proxy.unary_unary(be.UNARY)(b"x", metadata=[("x-delay-ms", "10000")], timeout=30)
    await wait_for(lambda: setup.a.in_flight + setup.b.in_flight == 1, what="a call in flight")
    (cluster,) = (await setup.snapshot()).clusters
    assert cluster.in_flight == 1
    assert sorted(ep.in_flight for ep in cluster.endpoints) == [0, 1]
    slow.cancel()


async def test_it_filters_the_snapshot_by_cluster(setup: Setup) -> None:
    assert [c.name for c in (await setup.snapshot("echo")).clusters] == ["echo"]
    err = await _rpc_error(setup.snapshot("nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "no cluster named 'nope' (clusters: echo)"


async def test_it_streams_snapshots_that_show_changes(setup: Setup) -> None:
    request = admin_pb2.WatchSnapshotsRequest(interval_ms=100)
    stream = setup.admin.WatchSnapshots(request, metadata=AUTH)
    first, second = await stream.read(), await stream.read()
    assert isinstance(first, admin_pb2.Snapshot) and isinstance(second, admin_pb2.Snapshot)
    assert second.taken_at_unix_ms > first.taken_at_unix_ms

    await setup.call()
    while not (snapshot := await stream.read()).clusters[0].requests_total:
        pass  # a snapshot taken before the call; the next one shows it
    assert isinstance(snapshot, admin_pb2.Snapshot)
    assert snapshot.clusters[0].requests_total == 1
    stream.cancel()


@pytest.mark.parametrize("interval_ms", [0, 50, 99])
async def test_it_rejects_a_watch_interval_under_100_ms(setup: Setup, interval_ms: int) -> None:
    request = admin_pb2.WatchSnapshotsRequest(interval_ms=interval_ms)
    err = await _rpc_error(setup.admin.WatchSnapshots(request, metadata=AUTH).read())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"interval_ms {interval_ms} is too short: use at least 100 (ms)"


# --- controls -------------------------------------------------------------------------------


async def test_it_sets_a_weight(setup: Setup) -> None:
    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-b", weight=0)
    endpoint = await setup.admin.SetWeight(request, metadata=AUTH)
    assert (endpoint.endpoint_id, endpoint.weight, endpoint.effective_weight) == ("pod-b", 0, 0)
    assert await setup.served_by(10) == Counter({"pod-a": 10})

    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-b", weight=300)
    await setup.admin.SetWeight(request, metadata=AUTH)
    assert (await setup.endpoint("pod-b")).weight == 300
    served = await setup.served_by(40)
    assert abs(served["pod-b"] - 30) <= 1  # smooth weighted round robin: 300/(100+300) of 40


@pytest.mark.parametrize("weight", [10_001, -1])
async def test_it_rejects_a_weight_out_of_range(setup: Setup, weight: int) -> None:
    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-a", weight=weight)
    err = await _rpc_error(setup.admin.SetWeight(request, metadata=AUTH))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"weight {weight} is out of range: use 0 to 10000"
    assert (await setup.endpoint("pod-a")).weight == 100


async def test_it_drains_an_endpoint(setup: Setup) -> None:
    request = admin_pb2.DrainRequest(cluster="echo", endpoint_id="pod-a")
    endpoint = await setup.admin.Drain(request, metadata=AUTH)
    assert endpoint.state == DRAINED  # nothing was in flight
    calls_before = setup.a.calls
    assert await setup.served_by(10) == Counter({"pod-b": 10})
    assert setup.a.calls == calls_before
    (cluster,) = (await setup.snapshot()).clusters
    assert cluster.ready_endpoints == 1


async def test_it_undrains_an_endpoint(setup: Setup) -> None:
    drain = admin_pb2.DrainRequest(cluster="echo", endpoint_id="pod-a")
    await setup.admin.Drain(drain, metadata=AUTH)
    undrain = admin_pb2.UndrainRequest(cluster="echo", endpoint_id="pod-a")
    endpoint = await setup.admin.Undrain(undrain, metadata=AUTH)
    assert endpoint.state == READY
    assert await setup.served_by(10) == Counter({"pod-a": 5, "pod-b": 5})


async def test_it_drains_with_a_timeout(setup: Setup) -> None:
    slow = setup.proxy.unary_unary(be.UNARY)(b"x", metadata=[("x-delay-ms", "30000")], timeout=60)
    await wait_for(lambda: setup.a.in_flight + setup.b.in_flight == 1, what="a call in flight")
    busy = setup.a if setup.a.in_flight else setup.b

    request = admin_pb2.DrainRequest(cluster="echo", endpoint_id=busy.name, timeout_ms=200)
    endpoint = await setup.admin.Drain(request, metadata=AUTH)
    assert endpoint.state == DRAINING
    assert endpoint.in_flight == 1
    assert endpoint.HasField("drain_deadline_unix_ms")

    err = await _rpc_error(slow)  # the timeout cancels the call still running
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "drain timeout" in err.details()
    ep = setup.balancer.clusters["echo"].endpoints[busy.name]
    await wait_for(lambda: ep.state is State.DRAINED, what="DRAINED")
    drained = await setup.endpoint(busy.name)
    assert (drained.state, drained.in_flight) == (DRAINED, 0)
    assert not drained.HasField("drain_deadline_unix_ms")


async def test_it_sets_the_policy(setup: Setup) -> None:
    request = admin_pb2.SetPolicyRequest(cluster="echo", policy="least_request")
    cluster = await setup.admin.SetPolicy(request, metadata=AUTH)
    assert (cluster.name, cluster.policy, len(cluster.endpoints)) == ("echo", "least_request", 2)
    assert setup.balancer.clusters["echo"].policy == "least_request"
    assert sum((await setup.served_by(4)).values()) == 4


async def test_it_rejects_an_unknown_policy(setup: Setup) -> None:
    request = admin_pb2.SetPolicyRequest(cluster="echo", policy="fastest")
    err = await _rpc_error(setup.admin.SetPolicy(request, metadata=AUTH))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "policy 'fastest' is unknown: use one of round_robin, least_request, peak_ewma, random"
    )
    assert setup.balancer.clusters["echo"].policy == "round_robin"


async def test_it_answers_not_found_for_an_unknown_cluster(setup: Setup) -> None:
    request = admin_pb2.DrainRequest(cluster="nope", endpoint_id="pod-a")
    err = await _rpc_error(setup.admin.Drain(request, metadata=AUTH))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "no cluster named 'nope' (clusters: echo)"


async def test_it_answers_not_found_for_an_unknown_endpoint(setup: Setup) -> None:
    request = admin_pb2.SetWeightRequest(cluster="echo", endpoint_id="pod-z", weight=1)
    err = await _rpc_error(setup.admin.SetWeight(request, metadata=AUTH))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "cluster 'echo' has no endpoint 'pod-z' (endpoints: pod-a, pod-b)"


async def test_it_asks_for_missing_names(setup: Setup) -> None:
    no_cluster = admin_pb2.UndrainRequest(endpoint_id="pod-a")
    err = await _rpc_error(setup.admin.Undrain(no_cluster, metadata=AUTH))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "cluster is required (clusters: echo)"
    no_endpoint = admin_pb2.UndrainRequest(cluster="echo")
    err = await _rpc_error(setup.admin.Undrain(no_endpoint, metadata=AUTH))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "endpoint_id is required (endpoints of 'echo': pod-a, pod-b)"


async def test_it_says_when_the_admin_port_is_taken(
    backends: Callable[..., Awaitable[Backend]], balancers: Callable[..., Awaitable[Balancer]]
) -> None:
    backend = await backends("pod-a")
    balancer = await balancers(config([backend]))
    with taken_port() as address:
        admin = AdminServer(balancer, AdminConfig(address=address, token=ADMIN_TOKEN))
        with pytest.raises(ListenError, match=rf"cannot listen on {address} \(admin API\)"):
            await admin.start()
