"""Finding, starting and stopping the HAProxy child process."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
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
    """One HAProxy process in the foreground (`-db`), its output logged line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.last_lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
        self._reader = asyncio.get_running_loop().create_task(self._log_output())

    @classmethod
    async def spawn(cls, binary: str, config_file: str, *, replaces: int | None = None) -> Self:
        """Starts HAProxy on `config_file`; with `replaces`, the new process takes over the
        listeners and soft-stops that pid (`-sf`): its calls finish, new ones come here."""
        args = [binary, "-db", "-f", config_file]
        if replaces is not None:
            args += ["-sf", str(replaces)]
        proc = await asyncio.create_subprocess_exec(
            *_die_with_parent(args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _log_output(self) -> None:
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.last_lines.append(line)
                level = logging.WARNING if "[ALERT]" in line else logging.INFO
                log.log(level, "haproxy[%d]: %s", self.pid, line)

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        code = await self._proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader  # the last lines, for the log and StartFailed
        return code

    def signal(self, sig: signal.Signals) -> None:
        if self._proc.returncode is None:
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
            if self._proc.returncode is not None:
                break
            if wait_s > 0 or sig is signal.SIGKILL:
                self.signal(sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._proc.wait()), wait_s)
        await self.wait()


_HARD_STOP_S = 2.0
