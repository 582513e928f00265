"""Every RPC kind, status, details and trailers through a real HAProxy child."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from tests.support import backend as be
from tests.support.balancing import config

pytestmark = pytest.mark.timeout(120)

HAPROXY = {"engine": "haproxy", "shutdown_grace_s": 1}


@pytest.fixture
async def proxied(backends, balancers):
    backend = await backends("pod-a")
    balancer = await balancers(config([backend], **HAPROXY))
    channel = grpc.aio.insecure_channel(balancer.listen_addresses[0])
    yield backend, balancer, channel
    await channel.close()


async def test_it_relays_a_unary_call_with_headers_and_trailers(proxied):
    backend, _, channel = proxied
    call = channel.unary_unary(be.UNARY)(b"ping", metadata=[("x-echo-id", "42")], timeout=10)
    assert await call == b"ping"
    headers = dict(await call.initial_metadata())
    assert headers["x-backend"] == "pod-a"
    assert headers["x-echo-id"] == "42"
    assert dict(await call.trailing_metadata())["x-trailer"] == "pod-a"
    assert backend.metadata_seen[-1]["x-echo-id"] == "42"


async def test_it_relays_a_server_stream(proxied):
    _, _, channel = proxied
    call = channel.unary_stream(be.SERVER_STREAM)(b"m", metadata=[("x-count", "4")], timeout=10)
    assert [m async for m in call] == [b"m0", b"m1", b"m2", b"m3"]
    assert await call.code() == grpc.StatusCode.OK


async def test_it_relays_a_client_stream(proxied):
    _, _, channel = proxied
    call = channel.stream_unary(be.CLIENT_STREAM)(iter([b"a", b"b", b"c"]), timeout=10)
    assert await call == b"a|b|c"


async def test_it_relays_a_bidi_stream_in_lockstep(proxied):
    _, _, channel = proxied
    call = channel.stream_stream(be.BIDI)(timeout=10)
    for word in (b"one", b"two"):
        await call.write(word)
        assert await call.read() == word.upper()
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("method", be.METHODS)
async def test_it_relays_error_status_details_and_trailers(proxied, method):
    _, _, channel = proxied
    metadata = [("x-fail-code", "RESOURCE_EXHAUSTED"), ("x-fail-details", "quota gone")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(channel, method, metadata)
    err = caught.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "quota gone"
    assert dict(err.trailing_metadata())["x-why"] == "asked-to-fail"


async def test_it_reports_the_engine_in_the_snapshot(proxied):
    from balancer.admin.snapshot import Reader

    _, balancer, _ = proxied
    view = Reader(balancer).balancer()
    assert (view.engine, view.engine_up) == ("haproxy", True)


async def _invoke(channel, method, metadata):
    if method == be.UNARY:
        return await channel.unary_unary(method)(b"x", metadata=metadata, timeout=10)
    if method == be.SERVER_STREAM:
        return [m async for m in channel.unary_stream(method)(b"x", metadata=metadata, timeout=10)]
    if method == be.CLIENT_STREAM:
        return await channel.stream_unary(method)(iter([b"x"]), metadata=metadata, timeout=10)
    call = channel.stream_stream(method)(metadata=metadata, timeout=10)
    await call.write(b"x")
    await call.done_writing()
    return [m async for m in call]
