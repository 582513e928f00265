"""What the proxy holds is bounded: message size, in-flight message bytes, streams per client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import generate_latest

from balancer.admin.messages import snapshot_message
from balancer.admin.metrics import balancer_registry
from balancer.admin.snapshot import Reader
from tests.support import backend as be
from tests.support.balancing import config
from tests.support.waiting import wait_for

MIB = 1 << 20
BIG = "/test.Big/Make"  # answers a request "<n>" with n bytes
WIDE_OPEN = [("grpc.max_receive_message_length", 256 * MIB),
             ("grpc.max_send_message_length", 256 * MIB)]  # fmt: skip


class _BigHandler(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != BIG:
            return None
        return grpc.stream_stream_rpc_method_handler(self.make)

    async def make(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield b"y" * int(request)


@pytest.fixture
async def big_backend() -> AsyncIterator[str]:
    """A server that sends messages as large as asked (up to 256 MiB)."""
    server = grpc.aio.server(options=[*WIDE_OPEN, ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([_BigHandler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def _big_config(address: str, *, unary: bool, **balancer: Any):
    cluster = {"discovery": {"endpoints": [{"address": address, "name": "big-0"}]},
               "unary_methods": [BIG] if unary else []}  # fmt: skip
    return config([], cluster=cluster, **balancer)


async def _ask(channel: grpc.aio.Channel, n_bytes: int, *, unary: bool) -> bytes:
    if unary:
        return await channel.unary_unary(BIG)(str(n_bytes).encode(), timeout=20)  # type: ignore[no-any-return]
    call = channel.stream_stream(BIG)(iter([str(n_bytes).encode()]), timeout=20)
    (message,) = [m async for m in call]
    return message  # type: ignore[no-any-return]


@pytest.mark.parametrize("unary", [True, False], ids=["unary", "stream"])
async def test_it_names_its_own_limit_when_a_response_is_too_large(big_backend, balancers, unary):
    balancer = await balancers(_big_config(big_backend, unary=unary, max_message_bytes=MIB))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0], options=WIDE_OPEN) as ch:
        assert len(await _ask(ch, MIB - 64, unary=unary)) == MIB - 64
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _ask(ch, 2 * MIB, unary=unary)
    err = caught.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.details() or ""
    assert details.startswith("ballast: endpoint big-0 sent a message larger than Ballast's limit")
    assert "toward the endpoint" in details
    assert "balancer.max_message_bytes = 1048576" in details
    assert "CLIENT:" not in details
    stats = balancer.clusters["echo"].endpoints["big-0"].stats
    assert stats.requests_by_code() == {"OK": 1, "RESOURCE_EXHAUSTED": 1}


@pytest.mark.parametrize("method", [be.UNARY, be.BIDI])
async def test_it_refuses_a_request_over_the_limit_with_resource_exhausted(
    backends, balancers, method
):
    backend = await backends("pod-a")
    balancer = await balancers(
        config([backend], cluster={"unary_methods": [be.UNARY]}, max_message_bytes=MIB)
    )
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0], options=WIDE_OPEN) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if method == be.UNARY:
                await ch.unary_unary(method)(b"x" * (2 * MIB), timeout=20)
            else:
                [m async for m in ch.stream_stream(method)(iter([b"x" * (2 * MIB)]), timeout=20)]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max (2097152 vs. 1048576)" in (caught.value.details() or "")


async def test_it_uses_grpcs_4_mib_limit_by_default(backends, balancers):
    backend = await backends("pod-a")
    balancer = await balancers(config([backend], cluster={"unary_methods": [be.UNARY]}))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0], options=WIDE_OPEN) as ch:
        assert len(await ch.unary_unary(be.UNARY)(b"x" * (4 * MIB - 64), timeout=20)) > 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ch.unary_unary(be.UNARY)(b"x" * (4 * MIB + 1), timeout=20)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def _held_call(channel: grpc.aio.Channel, size: int, delay_ms: int) -> bytes:
    call = channel.unary_unary(be.UNARY)(
        b"h" * size, metadata=[("x-delay-ms", str(delay_ms))], timeout=20
    )
    return await call  # type: ignore[no-any-return]


@pytest.mark.parametrize("second", [be.UNARY, be.BIDI])
async def test_it_refuses_a_message_past_the_in_flight_budget_and_serves_after(
    backends, balancers, second
):
    backend = await backends("pod-a")
    balancer = await balancers(
        config(
            [backend],
            cluster={"unary_methods": [be.UNARY]},
            max_message_bytes=MIB,
            max_in_flight_bytes=MIB,
        )
    )
    budget = balancer.engine.proxy.limits.budget
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0], options=WIDE_OPEN) as ch:
        held = asyncio.ensure_future(_held_call(ch, 700 * 1024, delay_ms=3000))
        await wait_for(lambda: backend.in_flight == 1, what="the first call at the backend")
        payload = b"s" * (700 * 1024)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if second == be.UNARY:
                await ch.unary_unary(second)(payload, timeout=20)
            else:
                [m async for m in ch.stream_stream(second)(iter([payload]), timeout=20)]
        assert len(await held) == 700 * 1024
        assert await ch.unary_unary(be.UNARY)(payload, timeout=20) == payload
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert "does not fit Ballast's budget of in-flight message bytes" in details
    assert "balancer.max_in_flight_bytes" in details
    assert budget.refused == 1
    assert budget.in_flight_bytes == 0  # every byte taken was given back
    snapshot = snapshot_message(Reader(balancer).balancer())
    assert snapshot.messages_over_budget_total == 1
    assert snapshot.in_flight_message_bytes == 0
    metrics = generate_latest(balancer_registry(Reader(balancer))).decode()
    assert "ballast_messages_over_budget_total 1.0" in metrics
    assert "ballast_in_flight_message_bytes 0.0" in metrics


async def test_it_caps_the_streams_one_client_connection_has_open(backends, balancers):
    backend = await backends("pod-a")
    balancer = await balancers(
        config([backend], cluster={"unary_methods": [be.UNARY]}, max_concurrent_streams=20)
    )
    address = balancer.listen_addresses[0]
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, backend.in_flight)
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    own = [("grpc.use_local_subchannel_pool", 1)]  # a connection each, as two processes have
    async with (
        grpc.aio.insecure_channel(address, options=own) as flood,
        grpc.aio.insecure_channel(address, options=own) as other,
    ):
        # Connected first: streams opened before the client has the server's SETTINGS
        # are refused (RST_STREAM REFUSED_STREAM), as HTTP/2 allows.
        assert await flood.unary_unary(be.UNARY)(b"hello", timeout=20) == b"hello"
        slow = [("x-delay-ms", "300")]
        calls = [flood.unary_unary(be.UNARY)(b"f", metadata=slow, timeout=60) for _ in range(60)]
        await wait_for(lambda: backend.in_flight >= 20, what="the flood at the backend")
        # Another client's call is not queued behind the flood.
        assert await other.unary_unary(be.UNARY)(b"o", timeout=20) == b"o"
        results = await asyncio.gather(*calls, return_exceptions=True)
    sampler.cancel()
    assert peak <= 21  # 20 of the flood's streams at a time (+1: the other client's call)
    # The flooding client itself may see a stream refused (REFUSED_STREAM) while a finished
    # stream's slot is not yet free on the server; nothing else.
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == grpc.StatusCode.UNAVAILABLE for r in refused)
    assert results.count(b"f") + len(refused) == 60
    assert results.count(b"f") >= 20
