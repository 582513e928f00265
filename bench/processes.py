"""Child processes for the benchmarks: started in their own session, always stopped.

Children run in a new session so a Ctrl-C in the terminal reaches only the parent, which
stops them in order (SIGTERM, then SIGKILL after a grace period). On Linux they also get
SIGTERM from the kernel if the parent dies without cleaning up (even by SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

STOP_GRACE_S = 3.0
PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A benchmark cannot go on; the message says why for the person running it."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A started child process; ``log_path`` holds its stderr when it was redirected."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, max_chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(stderr not captured)"
        return self.log_path.read_text(errors="replace")[-max_chars:] or "(stderr is empty)"


async def start_child(
    name: str,
    argv: list[str],
    *,
    stdin: int | None = None,
    stdout: int | IO[Any] | None = asyncio.subprocess.PIPE,
    log_path: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Child:
    """Starts ``argv`` (with ``env``, else our environment); stderr goes to ``log_path`` when
    given, else to ours."""
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log_path.open("wb")) if log_path else None
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Child(name, process, log_path)


async def read_json_line(child: Child, timeout_s: float) -> dict[str, Any]:
    """The next stdout line of ``child`` as a JSON object; raises BenchError on EOF/timeout."""
    assert child.process.stdout is not None
    try:
        line = await asyncio.wait_for(child.process.stdout.readline(), timeout_s)
    except TimeoutError:
        raise BenchError(f"{child.name}: no output within {timeout_s:.0f} s") from None
    if not line:
        code = await child.process.wait()
        raise BenchError(f"{child.name} exited with code {code}:\n{child.log_tail()}")
    event: dict[str, Any] = json.loads(line)
    return event


async def stop_child(child: Child, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; returns once the child is reaped."""
    if child.alive:
        with contextlib.suppress(ProcessLookupError):
            child.process.terminate()
        try:
            await asyncio.wait_for(child.process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
    await child.process.wait()


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of the given processes, in seconds."""
    total_s = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total_s += times.user + times.system
    return total_s


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle, summed over cores, in seconds."""
    times = psutil.cpu_times()._asdict()
    # Linux also reports guest time, which is already part of user time.
    busy_fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(times.get(name, 0.0) for name in busy_fields))
