"""Child processes that cannot outlive their supervisor.

Three layers, so that no pod survives us however we end:

- each child leads its own session and process group, so a Ctrl-C in the
  terminal reaches only the supervisor, and a kill of the group reaches
  whatever the child started itself;
- on Linux each child gets a parent-death signal (SIGKILL by default) from the
  kernel when the supervisor dies, even by SIGKILL. The kernel sends it when
  the *thread* that started the child ends: start children from the thread
  that runs the event loop for as long as they should live;
- `terminate` ends a child as the kubelet ends a container: SIGTERM to the
  process, a grace period, then SIGKILL to the whole group.

A child's own children are killed with its group, but only the child itself
gets the parent-death signal: a pod that starts processes of its own should set
one on them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

LAUNCHER = Path(__file__).with_name("_launch.py")

Process = asyncio.subprocess.Process


def guarded_argv(argv: Sequence[str], death_signal: int = signal.SIGKILL) -> list[str]:
    """`argv` run through the launcher that sets the parent-death signal (Linux only)."""
    if sys.platform != "linux":
        return list(argv)
    launcher = [sys.executable, "-I", "-S", str(LAUNCHER), str(os.getpid()), str(death_signal)]
    return [*launcher, "--", *argv]


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | IO[Any] | None = asyncio.subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    death_signal: int = signal.SIGKILL,
) -> Process:
    """Starts `argv` in a new session with a parent-death signal; raises OSError.

    A command that cannot be found or run still starts (the launcher) and exits
    at once with 127 or 126, as under a shell.
    """
    return await asyncio.create_subprocess_exec(
        *guarded_argv(argv, death_signal),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def signal_process(process: Process, signum: int) -> None:
    """Sends `signum` to the process if it has not been reaped yet."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def kill_group(process: Process) -> None:
    """SIGKILLs the process group the child leads: the child and everything it started.

    Call it while the child runs or right after it was reaped: a group's id is not
    reused while any member lives, so it then reaches exactly the leftovers.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def terminate(process: Process, grace_s: float) -> int:
    """SIGTERM, up to `grace_s` to exit, then SIGKILL to the group; returns the exit status.

    Returns once the child is reaped; leftovers of its group are killed too. A child
    reaped earlier is left alone (its group id may belong to someone else by now).
    """
    if process.returncode is not None:
        return process.returncode
    signal_process(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        kill_group(process)
    returncode = await process.wait()
    kill_group(process)
    return returncode


def exit_code(returncode: int) -> int:
    """The shell's (and Kubernetes') exit code: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
