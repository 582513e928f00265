"""Proxyless clients when the balancer process dies: a real `python -m balancer` with
`[xds]`, real grpcio xDS clients in their own processes, kill -9.

The balancer is not in the path of proxyless calls: killed, it costs them nothing;
they keep the last endpoints they were sent until an xDS server answers again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.support.backend import Backend
from tests.support.xds import XdsClientProcess, write_bootstrap

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


async def _start_balancer(
    tmp_path: Path, backends: list[Backend]
) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    """`python -m balancer` with a listener and `[xds]` in front of `backends`; its ready file."""
    endpoints = ", ".join(f'{{ address = "{b.address}", name = "{b.name}" }}' for b in backends)
    config = tmp_path / "ballast.toml"
    config.write_text(
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n[xds]\naddress = "127.0.0.1:0"\n\n'
        f'[[clusters]]\nname = "echo"\n[clusters.discovery]\nendpoints = [{endpoints}]\n',
        encoding="utf-8",
    )
    ready_file = tmp_path / "ready.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--config", str(config),
        "--ready-file", str(ready_file), "--log-level", "WARNING", cwd=ROOT,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not ready_file.exists():
        assert proc.returncode is None and loop.time() < deadline, "the balancer did not start"
        await asyncio.sleep(0.05)
    return proc, json.loads(ready_file.read_text(encoding="utf-8"))


async def test_it_loses_no_proxyless_call_when_the_balancer_is_killed(tmp_path, backends):
    a, b = await backends("pod-a"), await backends("pod-b")
    proc, ready = await _start_balancer(tmp_path, [a, b])
    client = None
    try:
        bootstrap = write_bootstrap(tmp_path / "bootstrap.json", str(ready["xds"]), "client-1")
        client = await XdsClientProcess.start("xds:///echo", bootstrap)
        before = await client.request(op="calls", n=40)
        assert before["errors"] == {} and set(before["counts"]) == {"pod-a", "pod-b"}

        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        after = await client.request(op="calls", n=200)

        assert after["errors"] == {}  # not one call lost: the balancer was not in their path
        assert sum(after["counts"].values()) == 200
        assert set(after["counts"]) == {"pod-a", "pod-b"}
    finally:
        if client is not None:
            await client.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
