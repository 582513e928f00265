"""bench/proxyless.py compares like with like: its direct case holds as many connections to
each backend as the proxyless one and balances every call, as proxyless clients do.

Real echo backends and a real load generator process (`bench/loadgen.py --serve`, the
bench's own), a real in-process balancer serving `[xds]`; the connections are counted
from the load generator's sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from balancer.config import config_from_dict
from balancer.server import Balancer

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # bench/ is a folder of scripts importing each other by name

import proxyless  # noqa: E402

pytestmark = pytest.mark.timeout(120)


async def _json_line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line, f"the process exited ({await process.wait()})"
    answer: dict[str, Any] = json.loads(line)
    return answer


@pytest.fixture
async def echo_backends() -> AsyncIterator[list[str]]:
    started = []
    for _ in range(2):
        started.append(
            await asyncio.create_subprocess_exec(
                sys.executable, str(BENCH / "echo_backend.py"), stdout=asyncio.subprocess.PIPE
            )
        )
    yield [f"127.0.0.1:{(await _json_line(p))['port']}" for p in started]
    for process in started:
        process.terminate()
        await process.wait()


async def _balancer(backends: list[str]) -> Balancer:
    endpoints = [{"address": a, "name": f"echo-{i}"} for i, a in enumerate(backends)]
    config = config_from_dict(
        {
            "balancer": {"id": "bench-test"},
            "listeners": [{"address": "127.0.0.1:0"}],
            "xds": {"address": "127.0.0.1:0"},
            "clusters": [{"name": "echo", "discovery": {"endpoints": endpoints}}],
        },
        environ={},
    )
    balancer = Balancer(config)
    await balancer.start()
    return balancer


def _connections_to(pid: int, backends: list[str]) -> Counter[str]:
    """The load generator's established connections, per backend address."""
    ports = {int(a.rsplit(":", 1)[1]): a for a in backends}
    return Counter(
        ports[c.raddr.port]
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in ports
    )


async def _connections_of_case(
    loadgen: asyncio.subprocess.Process, spec: dict[str, Any], backends: list[str]
) -> Counter[str]:
    """Runs one short case; returns the connections it opened (channels stay open)."""
    before = _connections_to(loadgen.pid, backends)
    assert loadgen.stdin is not None
    run = {**spec, "channels": 2, "concurrency": 8, "duration_s": 0.3, "warmup_s": 0.1}
    loadgen.stdin.write((json.dumps(run) + "\n").encode())
    await loadgen.stdin.drain()
    while (event := await _json_line(loadgen))["event"] != "measuring":
        pass
    opened = _connections_to(loadgen.pid, backends) - before
    while (event := await _json_line(loadgen))["event"] != "result":
        pass
    assert event["errors"] == 0 and event["count"] > 0, event
    return opened


async def test_it_gives_direct_the_connections_and_balancing_proxyless_has(
    echo_backends, tmp_path: Path
):
    balancer = await _balancer(echo_backends)
    assert balancer.xds_address is not None
    bootstrap = tmp_path / "bootstrap.json"
    proxyless.write_bootstrap(bootstrap, balancer.xds_address)
    loadgen = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "loadgen.py"), "--serve",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
    )  # fmt: skip
    try:
        listener = balancer.listen_addresses[0]
        opened = {
            case: await _connections_of_case(
                loadgen, proxyless.case_spec(case, echo_backends, listener), echo_backends
            )
            for case in ("direct", "proxyless", "direct_pinned")
        }
    finally:
        assert loadgen.stdin is not None
        loadgen.stdin.close()
        await loadgen.wait()
        await balancer.stop(grace_s=0)

    both_twice = Counter(dict.fromkeys(echo_backends, 2))
    assert opened["direct"] == opened["proxyless"] == both_twice  # 2 channels × 2 backends
    assert opened["direct_pinned"] == Counter(dict.fromkeys(echo_backends, 1))


def test_it_reports_ratios_per_round_against_the_balanced_direct_case():
    rounds = {
        "direct": {"rps": [100.0, 200.0], "p50_ms": [0.5, 0.6], "cpu_us": [100.0, 80.0]},
        "proxyless": {"rps": [95.0, 190.0], "p50_ms": [0.52, 0.61], "cpu_us": [105.0, 84.0]},
        "proxy": {"rps": [40.0, 80.0], "p50_ms": [1.5, 1.6], "cpu_us": [120.0, 96.0]},
        "direct_pinned": {"rps": [130.0, 260.0], "p50_ms": [0.4, 0.5], "cpu_us": [70.0, 56.0]},
    }
    convergence = ([60.0, 70.0], [50.0, 55.0])

    report = proxyless.summarize(rounds, convergence, {"rounds": 2})

    assert report["proxyless_throughput_ratio"] == 0.95
    assert report["direct_pinned_throughput_ratio"] == 1.3
    assert report["proxyless_client_cpu_ratio"] == 1.05
    assert report["proxyless_added_p50_ms"] == 0.015
    assert report["proxy_throughput_ratio"] == 0.4
