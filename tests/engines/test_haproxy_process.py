"""`python -m balancer` with the HAProxy engine, as an operator runs it: SIGTERM, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.support import backend as be
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 5


def _config(tmp_path: Path, endpoint: str) -> Path:
    path = tmp_path / "ballast.toml"
    path.write_text(
        f'[balancer]\nengine = "haproxy"\nshutdown_grace_s = {GRACE_S}\n\n'
        "[haproxy]\nthreads = 1\n\n"
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n'
        f'[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["{endpoint}"]\n',
        encoding="utf-8",
    )
    return path


def _haproxy_children(pid: int) -> list[int]:
    """Pids of the `haproxy` processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if comm == "haproxy" and int(fields.split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def _start(tmp_path: Path, endpoint: str) -> tuple[asyncio.subprocess.Process, str]:
    ready_file = tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if k != "BALLAST_ADMIN_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--config", str(_config(tmp_path, endpoint)),
        "--ready-file", str(ready_file), "--log-level", "WARNING",
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await wait_for(lambda: ready_file.exists() or proc.returncode is not None, 30, "ready file")
    assert proc.returncode is None, "the balancer exited before it was ready"
    (listener,) = json.loads(ready_file.read_text())["listeners"]
    return proc, listener


async def test_it_lets_a_call_finish_on_sigterm_and_stops_haproxy(tmp_path, backends):
    backend = await backends("pod-a")
    proc, listener = await _start(tmp_path, backend.address)
    try:
        (child,) = _haproxy_children(proc.pid)
        async with grpc.aio.insecure_channel(listener) as channel:
            slow = channel.unary_unary(be.UNARY)(
                b"hi", metadata=[("x-delay-ms", "1500")], timeout=30
            )
            await wait_for(lambda: backend.in_flight == 1, 10, what="the slow call at the pod")
            proc.send_signal(signal.SIGTERM)
            assert await slow == b"hi"  # finished within the grace
        _, stderr = await asyncio.wait_for(proc.communicate(), GRACE_S + 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert not _alive(child)


async def test_it_takes_haproxy_down_with_a_killed_balancer(tmp_path, backends):
    backend = await backends("pod-a")
    proc, _ = await _start(tmp_path, backend.address)
    (child,) = _haproxy_children(proc.pid)
    proc.kill()
    await proc.wait()
    # setpriv --pdeathsig: no HAProxy is left holding the ports of a dead balancer.
    await wait_for(lambda: not _alive(child), 10, what="haproxy gone with its balancer")
