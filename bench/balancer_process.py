"""Starts the balancer (``python -m balancer``) in front of the echo backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from processes import BenchError, Child, start_child

READY_TIMEOUT_S = 15.0
READY_POLL_S = 0.05
REPO_DIR = Path(__file__).resolve().parent.parent
UNARY_METHOD = "/bench.Echo/Unary"


def admin_toml(admin_token: str | None) -> str:
    """No admin API, or one on a free port taking ``admin_token``."""
    if admin_token is None:
        return "enabled = false"
    return f'address = "127.0.0.1:0"\ntoken = {json.dumps(admin_token)}'


def balancer_toml(
    backend_addresses: list[str],
    *,
    record_stats: bool,
    admin_token: str | None = None,
    engine: str = "embedded",
) -> str:
    """The bench config: one listener on a free port, one round-robin cluster carried by
    ``engine`` ("embedded" or "haproxy"), and the admin API only when ``admin_token`` is
    given."""
    endpoints = ", ".join(json.dumps(address) for address in backend_addresses)
    return f"""\
[balancer]
id = "bench"
record_stats = {str(record_stats).lower()}
engine = {json.dumps(engine)}

[admin]
{admin_toml(admin_token)}

[[listeners]]
address = "127.0.0.1:0"

[routing]
default_cluster = "echo"

[[clusters]]
name = "echo"
policy = "round_robin"
unary_methods = ["{UNARY_METHOD}"]

[clusters.discovery]
kind = "static"
endpoints = [{endpoints}]
"""


def read_ready_file(path: Path) -> str | None:
    """The first listener address once the ready file is complete, else None."""
    try:
        ready = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # not written yet, or caught mid-write
    listeners = ready.get("listeners") or []
    return str(listeners[0]) if listeners else None


async def wait_until_ready(child: Child, ready_path: Path) -> str:
    """Polls the ready file until it names a listener; raises BenchError on exit or timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive:
            raise BenchError(
                f"{child.name} exited with code {child.process.returncode} before it was ready"
                f":\n{child.log_tail()}"
            )
        if address := read_ready_file(ready_path):
            return address
        await asyncio.sleep(READY_POLL_S)
    raise BenchError(
        f"{child.name} wrote no ready file within {READY_TIMEOUT_S:.0f} s:\n{child.log_tail()}"
    )


async def launch_balancer(
    name: str,
    work_dir: Path,
    backend_addresses: list[str],
    *,
    record_stats: bool,
    admin_token: str | None = None,
    engine: str = "embedded",
) -> tuple[Child, Path]:
    """Starts a balancer on ``engine``; returns it and the ready file for ``wait_until_ready``.

    The caller owns the child and must stop it, whether or not it ever gets ready.
    """
    config_path = work_dir / f"{name}.toml"
    ready_path = work_dir / f"{name}.ready.json"
    toml = balancer_toml(
        backend_addresses, record_stats=record_stats, admin_token=admin_token, engine=engine
    )
    config_path.write_text(toml)
    with contextlib.suppress(FileNotFoundError):
        ready_path.unlink()
    argv = [sys.executable, "-m", "balancer", "--config", str(config_path)]
    argv += ["--ready-file", str(ready_path)]
    child = await start_child(
        name,
        argv,
        stdout=asyncio.subprocess.DEVNULL,
        log_path=work_dir / f"{name}.stderr.log",
        cwd=REPO_DIR,
    )
    return child, ready_path
