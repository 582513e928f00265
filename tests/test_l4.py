"""The L4 Service emulator: one random pick per TCP connection, then pinned, like kube-proxy."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import pytest

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address
from demo.l4 import L4Service
from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc
from tests.support.inventory import InventoryServer, dead_port
from tests.support.waiting import wait_for

# Each client is its own service with its own TCP connection, as in production.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
MIB = 1024 * 1024
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
StartL4 = Callable[..., Awaitable[L4Service]]


class Client:
    """One client service: one long-lived channel (one TCP connection) to the Service."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=OWN_CONNECTION)
        self.stub = pb_grpc.InventoryStub(self.channel)

    async def pods(self, calls: int = 5) -> set[str]:
        """The pods that served `calls` unary calls."""
        pods = set()
        for i in range(calls):
            item = await self.stub.GetItem(pb.GetItemRequest(id=str(i)), timeout=5)
            pods.add(item.pod)
        return pods

    async def pod(self) -> str:
        (pod,) = await self.pods(3)
        return pod


@pytest.fixture
async def pods(inventories: Callable[[str], Awaitable[InventoryServer]]) -> list[InventoryServer]:
    return [await inventories(name) for name in ("pod-a", "pod-b", "pod-c")]


@pytest.fixture
async def l4s() -> AsyncIterator[StartL4]:
    started: list[L4Service] = []

    async def start(backends: object, seed: int = 1, **kwargs: object) -> L4Service:
        service = L4Service(backends, rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Client]]:
    opened: list[Client] = []

    def open_client(target: str) -> Client:
        client = Client(target)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.channel.close()


def address(server: InventoryServer) -> Address:
    return Address("127.0.0.1", server.port, pod_name=server.pod)


class Updates:
    """A discovery stream the test drives: `send()` an update, the L4 Service applies it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue()

    def send(self, update: Update) -> None:
        self.queue.put_nowait(update)

    async def __aiter__(self) -> AsyncIterator[Update]:
        while True:
            yield await self.queue.get()


async def open_raw(l4: L4Service) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the L4 Service, no gRPC."""
    host, port = l4.address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything until the other end closes (a reset counts as closing)."""
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""


async def test_it_pins_every_client_to_one_pod(pods, l4s, clients):
    l4 = await l4s([address(p) for p in pods])
    fleet = [clients(l4.address) for _ in range(8)]
    for client in fleet:
        assert len(await client.pods(10)) == 1
    # Each client connection reached exactly one pod, as one peer of that pod.
    assert sum(len(p.peers) for p in pods) == 8
    assert sum(p.total_calls for p in pods) == 80
    snapshot = l4.snapshot()
    assert sum(b.total_connections for b in snapshot.backends) == 8
    assert snapshot.open_connections == 8


async def test_it_spreads_connections_at_random_over_ready_pods(pods, l4s, clients):
    l4 = await l4s([address(p) for p in pods], seed=7)
    # Connections open one after the other, so the seeded picks come in a fixed order.
    for _ in range(30):
        await clients(l4.address).pod()
    totals = {b.endpoint_id: b.total_connections for b in l4.snapshot().backends}
    assert totals == {"pod-a": 15, "pod-b": 6, "pod-c": 9}
    assert {p.pod: len(p.peers) for p in pods} == totals


async def test_it_sends_only_new_connections_to_a_pod_added_later(pods, inventories, l4s, clients):
    updates = Updates()
    updates.send(Reset(tuple(address(p) for p in pods)))
    l4 = await l4s(updates, seed=3)
    old = [clients(l4.address) for _ in range(6)]
    pinned = [await c.pod() for c in old]
    late = await inventories("pod-d")
    updates.send(Add((address(late),)))
    await wait_for(lambda: "pod-d" in l4.snapshot().ready_ids, what="pod-d ready")

    assert [await c.pod() for c in old] == pinned
    assert late.total_calls == 0
    new = [await clients(l4.address).pod() for _ in range(12)]
    assert "pod-d" in new
    assert l4.snapshot().by_id()["pod-d"].total_connections == new.count("pod-d")


async def test_it_keeps_the_connections_of_a_removed_pod_and_gives_it_no_new_ones(
    pods, l4s, clients
):
    l4 = await l4s([address(p) for p in pods], seed=5)
    old = [clients(l4.address) for _ in range(9)]
    pinned = [await c.pod() for c in old]
    gone = max(set(pinned), key=pinned.count)
    l4.apply(Remove((gone,)))

    assert [await c.pod() for c in old] == pinned  # conntrack keeps them
    kept = l4.snapshot().by_id()[gone]
    assert (kept.ready, kept.open_connections) == (False, pinned.count(gone))
    assert gone not in [await clients(l4.address).pod() for _ in range(12)]
    for client, pod in zip(old, pinned, strict=True):
        if pod == gone:
            await client.channel.close()
    # Its last connection closed: the removed pod is forgotten.
    await wait_for(lambda: gone not in l4.snapshot().by_id(), what="removed pod forgotten")


async def test_it_gives_no_new_connections_to_a_pod_discovery_says_is_not_ready(pods, l4s, clients):
    a, b, c = pods
    not_ready = Address("127.0.0.1", c.port, pod_name=c.pod, ready=False)
    l4 = await l4s([address(a), address(b), not_ready])
    assert "pod-c" not in [await clients(l4.address).pod() for _ in range(12)]
    assert l4.snapshot().ready_ids == ("pod-a", "pod-b")


async def test_it_passes_all_four_rpc_kinds_through_intact(pods, l4s, clients):
    l4 = await l4s([address(pods[0])])
    stub = clients(l4.address).stub
    big = os.urandom(MIB)

    item = await stub.GetItem(pb.GetItemRequest(id="u", payload_bytes=MIB), timeout=10)
    assert (item.id, item.pod, len(item.payload)) == ("u", "pod-a", MIB)
    watched = [i async for i in stub.WatchItems(pb.WatchItemsRequest(prefix="w", count=50))]
    assert [i.id for i in watched] == [f"w-{n}" for n in range(50)]
    items = [pb.Item(id=str(n), payload=big if n == 0 else b"") for n in range(100)]
    summary = await stub.ImportItems(iter(items), timeout=10)
    assert (summary.received, summary.pod) == (100, "pod-a")
    echoed = [i async for i in stub.SyncItems(iter(items[:3]), timeout=10)]
    assert [(i.id, i.pod) for i in echoed] == [("0", "pod-a"), ("1", "pod-a"), ("2", "pod-a")]
    assert echoed[0].payload == big

    counts = l4.snapshot().by_id()["pod-a"]
    assert counts.bytes_to_backend > 2 * MIB  # the 1 MiB item, sent twice
    assert counts.bytes_to_client > 2 * MIB  # the 1 MiB answer and the echo


async def test_it_closes_the_pod_side_when_the_client_closes(pods, l4s, clients):
    l4 = await l4s([address(pods[0])])
    client = clients(l4.address)
    await client.pod()
    assert pods[0].open_connections() == 1
    await client.channel.close()
    await wait_for(lambda: pods[0].open_connections() == 0, what="pod sees the connection go")
    await wait_for(lambda: l4.snapshot().open_connections == 0, what="L4 connection closed")


async def test_it_closes_the_client_side_when_the_pod_goes(pods, l4s):
    l4 = await l4s([address(pods[0])])
    reader, writer = await open_raw(l4)
    writer.write(HTTP2_PREFACE)
    try:
        await wait_for(lambda: pods[0].open_connections() == 1, what="pod sees the connection")
        await pods[0].stop()
        assert await read_until_closed(reader)  # the pod's SETTINGS, GOAWAY, then its FIN
    finally:
        writer.close()
    # The client closes its side in turn, as gRPC does on EOF: the connection is over.
    await wait_for(lambda: l4.snapshot().open_connections == 0, what="L4 connection closed")


async def test_it_closes_the_client_connection_when_the_picked_pod_is_dead(pods, l4s):
    with dead_port() as port:
        l4 = await l4s([Address("127.0.0.1", port, pod_name="pod-dead")])
        reader, writer = await open_raw(l4)
        assert await read_until_closed(reader) == b""
        writer.close()
    counts = l4.snapshot().by_id()["pod-dead"]
    assert (counts.connect_failures, counts.total_connections) == (1, 0)


async def test_it_does_not_retry_another_pod_when_the_picked_one_is_dead(pods, l4s):
    with dead_port() as port:
        l4 = await l4s([Address("127.0.0.1", port, pod_name="pod-dead"), address(pods[0])], seed=11)

        def decided() -> int:
            counts = l4.snapshot().by_id()
            return counts["pod-dead"].connect_failures + counts["pod-a"].total_connections

        for i in range(20):
            _, writer = await open_raw(l4)
            await wait_for(lambda i=i: decided() == i + 1, what="the L4 Service picked")
            writer.close()
    counts = l4.snapshot().by_id()
    # Every connection that drew the dead pod failed; none was sent to pod-a instead.
    assert counts["pod-dead"].connect_failures == 8
    assert counts["pod-dead"].total_connections == 0
    assert counts["pod-a"].total_connections == 12


async def test_it_fails_grpc_calls_when_the_only_pod_is_dead(l4s, clients):
    with dead_port() as port:
        l4 = await l4s([Address("127.0.0.1", port, pod_name="pod-dead")])
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await clients(l4.address).pod()
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert l4.snapshot().by_id()["pod-dead"].connect_failures >= 1
    assert l4.snapshot().open_connections == 0


async def test_it_refuses_connections_when_no_pod_is_ready(l4s):
    l4 = await l4s([])
    reader, writer = await open_raw(l4)
    assert await read_until_closed(reader) == b""
    writer.close()
    assert l4.snapshot().refused_connections == 1


async def test_it_fails_to_start_when_discovery_sends_nothing():
    l4 = L4Service(Updates(), first_update_timeout_s=0.05)
    with pytest.raises(TimeoutError):
        await l4.start()
    await l4.stop()


async def test_it_fails_to_start_when_discovery_fails_first():
    async def broken() -> AsyncIterator[Update]:
        raise ConnectionError("no API server")
        yield  # an async generator that never yields

    l4 = L4Service(broken())
    with pytest.raises(ConnectionError, match="no API server"):
        await l4.start()
    await l4.stop()


async def test_it_keeps_the_ready_set_when_discovery_fails_later(pods, l4s, clients):
    async def flaky() -> AsyncIterator[Update]:
        yield Reset((address(pods[0]),))
        raise ConnectionError("lost the API server")

    l4 = await l4s(flaky())
    assert await clients(l4.address).pod() == "pod-a"
    assert l4.snapshot().ready_ids == ("pod-a",)


async def test_it_stops_with_connections_open(pods, clients):
    l4 = L4Service([address(pods[0])])
    await l4.start()
    client = clients(l4.address)
    await client.pod()
    await l4.stop()
    await wait_for(lambda: pods[0].open_connections() == 0, what="pod connection closed")
