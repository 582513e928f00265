"""Balancer replicas as real processes (`python -m balancer`), for fault tests that
pause, resume or kill them with real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass
class ReplicaProcess:
    """A running `python -m balancer` and the addresses its ready file gave."""

    id: str
    process: asyncio.subprocess.Process
    listener: str
    admin: str
    log_path: Path

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (a hung replica)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    async def stop(self) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then kill if need be."""
        if self.process.returncode is not None:
            return
        self.resume()
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def write_config(path: Path, replica_id: str, cluster: str, pods: Sequence[Backend]) -> Path:
    """One cluster in front of `pods` (named by their pod names), listener and admin API
    on free ports, the admin token in the file."""
    endpoints = ", ".join(f'{{ address = "{p.address}", name = "{p.name}" }}' for p in pods)
    path.write_text(
        f'[balancer]\nid = "{replica_id}"\nshutdown_grace_s = 1\n\n'
        f'[[listeners]]\naddress = "127.0.0.1:0"\n\n'
        f'[admin]\naddress = "127.0.0.1:0"\ntoken = "{ADMIN_TOKEN}"\n\n'
        f'[[clusters]]\nname = "{cluster}"\ndiscovery.endpoints = [{endpoints}]\n',
        encoding="utf-8",
    )
    return path


async def start_replica(
    directory: Path, replica_id: str, cluster: str, pods: Sequence[Backend]
) -> ReplicaProcess:
    """Starts a replica and returns once its ready file is written (it serves)."""
    config = write_config(directory / f"{replica_id}.toml", replica_id, cluster, pods)
    ready_file = directory / f"{replica_id}.ready.json"
    log_path = directory / f"{replica_id}.log"
    env = {k: v for k, v in os.environ.items() if k != "BALLAST_ADMIN_TOKEN"}
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "balancer", "--config", str(config),
            "--ready-file", str(ready_file), "--log-level", "INFO",
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )  # fmt: skip
    ready = await _wait_for_ready_file(ready_file, process, log_path)
    listener = str(ready["listeners"][0])
    return ReplicaProcess(replica_id, process, listener, str(ready["admin"]), log_path)


async def _wait_for_ready_file(
    path: Path, process: asyncio.subprocess.Process, log_path: Path
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while not await asyncio.to_thread(path.exists):
        if process.returncode is not None:
            output = await asyncio.to_thread(log_path.read_text, errors="replace")
            raise AssertionError(f"the balancer exited: {output}")
        assert loop.time() < deadline, "no ready file in time"
        await asyncio.sleep(0.05)
    ready: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text, "utf-8"))
    return ready


@asynccontextmanager
async def replicas(
    directory: Path, ids: Sequence[str], cluster: str, pods: Sequence[Backend]
) -> AsyncIterator[dict[str, ReplicaProcess]]:
    """Replica processes by id, each in front of every pod; all stopped at the end."""
    started: dict[str, ReplicaProcess] = {}
    try:
        for replica_id in ids:
            started[replica_id] = await start_replica(directory, replica_id, cluster, pods)
        yield started
    finally:
        for replica in started.values():
            await replica.stop()
