"""One client floods the balancer process with streams, or callers send huge messages.

Real processes: `python -m balancer` in front of real backends; the flooding
client is a process of its own (its own connection). Other clients count
every call that did not end OK; the balancer's memory is sampled with psutil.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import grpc.aio
import pytest

from tests.support import backend as be
from tests.support.stream_flood import RssSampler, balancer_process, balancer_toml, run_flood

FLOOD_STREAMS = 10_000
STEADY_CLIENTS = 4
HUGE_CALLERS = 6
MIB = 1 << 20
HUGE = 60 * MIB
WIDE_OPEN = [("grpc.max_send_message_length", 128 * MIB),
             ("grpc.max_receive_message_length", 128 * MIB),
             ("grpc.use_local_subchannel_pool", 1)]  # fmt: skip

pytestmark = pytest.mark.timeout(300)


async def _steady_client(address: str, stop: asyncio.Event, codes: Counter[str]) -> None:
    """One connection making one call after another until `stop`; counts every code."""
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        call = channel.unary_unary(be.UNARY)
        while not stop.is_set():
            try:
                assert await call(b"steady", timeout=30) == b"steady"
                codes["OK"] += 1
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1


async def test_it_keeps_other_clients_whole_while_one_opens_10000_streams(tmp_path, backends):
    pods = [await backends(f"pod-{i}") for i in range(2)]
    toml = balancer_toml([p.address for p in pods])
    async with balancer_process(tmp_path, toml) as (address, _):
        stop = asyncio.Event()
        steady: Counter[str] = Counter()
        clients = [
            asyncio.ensure_future(_steady_client(address, stop, steady))
            for _ in range(STEADY_CLIENTS)
        ]
        flood = await run_flood(address, FLOOD_STREAMS)
        stop.set()
        await asyncio.gather(*clients)
    lost = sum(n for code, n in steady.items() if code != "OK")
    print(f"\nstream flood: flooder {dict(flood)}; other clients {dict(steady)}, lost {lost}")
    assert sum(flood.values()) == FLOOD_STREAMS  # the flood ran and stopped by itself
    assert flood["OK"] > 0
    assert steady["OK"] > 0
    assert lost == 0, f"other clients lost calls during the flood: {dict(steady)}"


async def _huge_call(address: str) -> str:
    async with grpc.aio.insecure_channel(address, options=WIDE_OPEN) as channel:
        try:
            await channel.unary_unary(be.UNARY)(b"m" * HUGE, timeout=60)
            return "OK"
        except grpc.aio.AioRpcError as err:
            return err.code().name


@pytest.mark.parametrize(
    ("settings", "bound_mib"),
    [
        pytest.param("", 200, id="default-limits"),
        pytest.param(f"max_message_bytes = {64 * MIB}", 1000, id="64-mib-messages"),
    ],
)
async def test_it_answers_huge_messages_with_resource_exhausted_in_bounded_memory(
    tmp_path, backends, settings, bound_mib
):
    pod = await backends("pod-0")
    toml = balancer_toml([pod.address], settings)
    async with balancer_process(tmp_path, toml) as (address, pid):
        rss = RssSampler(pid)
        baseline = rss.peak_bytes
        async with rss:
            calls = (_huge_call(address) for _ in range(HUGE_CALLERS))
            codes = Counter(await asyncio.gather(*calls))
    growth_mib = (rss.peak_bytes - baseline) / MIB
    print(
        f"\nsix 60 MiB callers ({settings or 'defaults'}): {dict(codes)};"
        f" balancer RSS {baseline / MIB:.0f} MiB at rest, peak {rss.peak_bytes / MIB:.0f} MiB"
        f" (+{growth_mib:.0f} MiB)"
    )
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    if not settings:
        assert codes == {"RESOURCE_EXHAUSTED": HUGE_CALLERS}
    assert growth_mib < bound_mib
