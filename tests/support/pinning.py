"""Pinned clients for the pinning detector's tests: `python -m demo.loadgen` processes, each
client one long-lived channel (one TCP connection) straight to one pod, as a client
behind a Kubernetes Service is after kube-proxy picked its pod.

They run in their own process: channels opened in the test's process could share the
in-process balancer's connections (gRPC's global subchannel pool) and would be found
by its channelz as its own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass

from tests.support.replicas import ROOT


@dataclass
class PinnedClients:
    """A `python -m demo.loadgen` process: `clients` channels to `target`."""

    process: asyncio.subprocess.Process
    clients: int
    target: str

    def kill(self) -> None:
        """SIGKILL: its connections close without a goodbye, as a client that crashed."""
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self.kill()
        await self.process.wait()


async def pin_clients(target: str, clients: int, rate_per_s: float) -> PinnedClients:
    """Starts `clients` clients calling `target` (a pod's host:port) at `rate_per_s` each,
    for up to ten minutes (stopped by the test)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "demo.loadgen", "--target", target, "--clients", str(clients),
        "--rate", str(rate_per_s), "--duration-s", "600",
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return PinnedClients(process, clients, target)
