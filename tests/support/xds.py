"""Proxyless gRPC clients for tests: a bootstrap file and a client subprocess to drive."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def write_bootstrap(
    path: Path, server_address: str, node_id: str, tls: dict[str, str] | None = None
) -> Path:
    """A gRPC xDS bootstrap file naming Ballast's xDS server and the node id; over TLS with
    `tls` (`ca_certificate_file`, and for mTLS `certificate_file` and `private_key_file`)."""
    creds = {"type": "insecure"} if tls is None else {"type": "tls", "config": tls}
    bootstrap = {
        "xds_servers": [
            {
                "server_uri": server_address,
                "channel_creds": [creds],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "locality": {"zone": "test"}},
    }
    path.write_text(json.dumps(bootstrap), encoding="utf-8")
    return path


class XdsClientProcess:
    """One `tests.support.xds_client` subprocess; `request` sends a command, returns its answer."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, target: str, bootstrap: Path) -> XdsClientProcess:
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(REPO)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.xds_client", target,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
        )  # fmt: skip
        return cls(process)

    async def request(self, timeout_s: float = 60.0, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise AssertionError(f"xds client exited ({await self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
