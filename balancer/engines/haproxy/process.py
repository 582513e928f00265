"""Finding, starting and stopping the HAProxy child process."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
from typing import Self

from balancer.engines.base import EngineUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install haproxy` (Debian, Ubuntu)"


def find_binary(binary: str) -> str:
    """The path of the HAProxy executable `binary` names (a path, or a name on PATH).

    Raises EngineUnavailable, in one line saying how to install it, when there is none.
    """
    if os.sep in binary:
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary
        found = None
    else:
        found = shutil.which(binary)
    if found is None:
        raise EngineUnavailable(
            f"haproxy.binary: {binary!r} is not an executable (balancer.engine = 'haproxy');"
            f" {INSTALL_HINT}, or set [haproxy] binary to its path"
        )
    return found


_OUTPUT_LINES_KEPT = 20
_ALERT = re.compile(r"^\[ALERT\]\s+\(\d+\)\s*:\s*")


def _die_with_parent(args: list[str]) -> list[str]:
    """`args` run so that the child gets SIGTERM when the balancer dies: a killed balancer
    must not leave an HAProxy holding its ports. util-linux's `setpriv` sets that
    (prctl PR_SET_PDEATHSIG) and execs; a preexec_fn could deadlock in a process with
    gRPC's threads. Without setpriv, the child is started as is."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *args] if setpriv else args


class StartFailed(OSError):
    """HAProxy exited or did not answer while starting; the message has its last words."""


class HaproxyProcess:
    """One HAProxy process in the foreground (`-db`), its output logged line by line.

    Started with `subprocess.Popen` (vfork and exec), not the event loop's own spawn:
    uvloop forks, and a fork of a process with gRPC's threads running is not safe
    (a balancer was seen to die of SIGSEGV starting HAProxy that way). A thread waits
    for the exit.
    """

    def __init__(self, proc: subprocess.Popen[bytes], output: asyncio.StreamReader) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.last_lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._log_output(output))
        self._exit: asyncio.Future[int] = loop.create_task(asyncio.to_thread(proc.wait))

    @classmethod
    async def spawn(cls, binary: str, config_file: str, *, replaces: int | None = None) -> Self:
        """Starts HAProxy on `config_file`; with `replaces`, the new process takes over the
        listeners and soft-stops that pid (`-sf`): its calls finish, new ones come here."""
        args = [binary, "-db", "-f", config_file]
        if replaces is not None:
            args += ["-sf", str(replaces)]
        # From the loop's own thread, not a worker: the parent-death signal is tied to the
        # thread that spawned the child. vfork + exec blocks the loop for a millisecond or so.
        proc = subprocess.Popen(  # noqa: ASYNC220
            _die_with_parent(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        output = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), proc.stdout)
        return cls(proc, output)

    async def _log_output(self, output: asyncio.StreamReader) -> None:
        async for raw in output:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.last_lines.append(line)
                level = logging.WARNING if "[ALERT]" in line else logging.INFO
                log.log(level, "haproxy[%d]: %s", self.pid, line)

    def last_words(self) -> str:
        """HAProxy's alerts (why it refused to start), without its prefixes; else its last
        lines."""
        alerts = [_ALERT.sub("", line) for line in self.last_lines if "[ALERT]" in line]
        return " | ".join(alerts or list(self.last_lines)[-3:]) or "no output"

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        """The exit code, once HAProxy has exited (and its last lines are logged)."""
        code = await asyncio.shield(self._exit)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._reader), _OUTPUT_DRAIN_S)
        return code

    def signal(self, sig: signal.Signals) -> None:
        if not self._exit.done():
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    async def stop(self, grace_s: float) -> None:
        """Soft stop (SIGUSR1: stop listening, let streams finish) for `grace_s`, then
        hard stop (SIGTERM), then SIGKILL."""
        for sig, wait_s in (
            (signal.SIGUSR1, grace_s),
            (signal.SIGTERM, _HARD_STOP_S),
            (signal.SIGKILL, _HARD_STOP_S),
        ):
            if self._exit.done():
                break
            if wait_s > 0 or sig is signal.SIGKILL:
                self.signal(sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._exit), wait_s)
        await self.wait()


# How long a finished process's last output lines are waited for.
_OUTPUT_DRAIN_S = 1.0
_HARD_STOP_S = 2.0
