"""The demo's third client group: proxyless gRPC clients (`xds:///inventory`).

They call the pods straight, balanced by what Ballast's xDS server tells them;
Ballast is not in their path. grpcio reads `GRPC_XDS_BOOTSTRAP` (the file that
names the xDS server) once, when the process starts, so the group runs as its
own process: `python -m demo.loadgen --target xds:///inventory`, with a
bootstrap file the demo writes. Its per-pod counts come from the progress lines
the load generator writes on stderr, its final codes from the summary it
prints on stdout when stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from demo.loadgen import Method
from platforms.local.processes import spawn

BOOTSTRAP_FILE = "xds-bootstrap.json"
NODE_ID = "ballast-demo-proxyless"
# The schedule runs until the demo stops it; a number argparse takes, long enough.
_FOREVER_S = 10.0 * 365 * 24 * 3600
_STOP_TIMEOUT_S = 15.0


def write_bootstrap(directory: Path, xds_address: str, node_id: str = NODE_ID) -> Path:
    """The gRPC xDS bootstrap file naming Ballast's xDS server (plaintext, on loopback);
    `node_id` names the clients in the admin snapshot and the dashboard."""
    bootstrap = {
        "xds_servers": [
            {
                "server_uri": xds_address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "locality": {"zone": "demo"}},
    }
    path = directory / BOOTSTRAP_FILE
    path.write_text(json.dumps(bootstrap, indent=2), encoding="utf-8")
    return path


@dataclass(frozen=True)
class ProxylessStats:
    """The group's calls so far: OK calls per pod and calls per status code."""

    pods: Mapping[str, int] = field(default_factory=dict)
    codes: Mapping[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


class ProxylessClients:
    """`clients` proxyless clients at `rate_per_s` each, in one subprocess; `start`, then `stop`."""

    def __init__(
        self,
        service: str,
        *,
        clients: int,
        rate_per_s: float,
        mix: Mapping[Method, float],
        every_s: float = 1.0,
    ) -> None:
        self.target = f"xds:///{service}"
        self._clients = clients
        self._rate_per_s = rate_per_s
        self._mix = ",".join(f"{method}={weight:g}" for method, weight in mix.items())
        self._every_s = every_s
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._live = ProxylessStats()
        self._final: ProxylessStats | None = None

    async def start(self, bootstrap: Path) -> None:
        """Starts the subprocess and returns: its clients connect as the xDS server answers."""
        argv = [sys.executable, "-m", "demo.loadgen", "--target", self.target,
                "--clients", str(self._clients), "--rate", str(self._rate_per_s),
                "--mix", self._mix, "--duration-s", str(_FOREVER_S),
                "--every-s", str(self._every_s)]  # fmt: skip
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        # Through the pods' launcher: killed with the demo, never left calling for years.
        self._process = await spawn(
            argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._follow_progress(), name="proxyless progress")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stats(self) -> ProxylessStats:
        """The last counts the subprocess reported (its final ones once stopped)."""
        return self._final or self._live

    async def _follow_progress(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            try:
                progress = json.loads(line)
            except ValueError:
                continue  # grpcio's own log lines
            if isinstance(progress, dict) and progress.get("event") == "progress":
                ok, errors = int(progress["ok"]), int(progress["errors"])
                self._live = ProxylessStats(
                    pods=dict(progress["pods"]),
                    codes={"OK": ok, **({"not OK": errors} if errors else {})},
                    elapsed_s=float(progress["elapsed_s"]),
                )

    async def stop(self) -> None:
        """SIGTERM: the clients stop calling, give calls in flight their deadline and print
        their summary, kept as the final stats. Killed if it does not end in time. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if self._reader is not None:  # communicate() reads stderr from here on
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), _STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            stdout, _ = await process.communicate()
        self._final = _summary(stdout.decode(errors="replace"))

    def __repr__(self) -> str:
        return f"ProxylessClients({self.target}, pid={self.pid})"


def _summary(stdout: str) -> ProxylessStats | None:
    """The load generator's last stdout line, its JSON summary; None without one."""
    lines = stdout.strip().splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if not isinstance(summary, dict) or summary.get("event") != "summary":
        return None
    return ProxylessStats(
        pods=dict(summary["pods"]),
        codes=dict(summary["codes"]),
        elapsed_s=float(summary["elapsed_s"]),
    )
