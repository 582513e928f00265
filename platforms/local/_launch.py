"""Sets a parent-death signal, then execs the real command: ``_launch.py PPID SIGNUM -- ARGV…``.

Run by `processes.spawn` with ``python -I -S``: a few milliseconds, stdlib only.
Doing this here rather than in a `preexec_fn` keeps Python code out of the
forked child of a process that runs gRPC threads (fork with threads is unsafe,
and gRPC logs about it on every fork); after exec the pod keeps this pid, its
session and the parent-death signal.

Exit codes of its own, as a shell's: 127 when the command is not found, 126
when it cannot be run.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def main(args: list[str]) -> int:
    parent_pid, signum, separator, *argv = args
    if separator != "--" or not argv:
        print("usage: _launch.py PPID SIGNUM -- COMMAND [ARG…]", file=sys.stderr)
        return 2
    if sys.platform == "linux":
        _set_parent_death_signal(int(signum))
        # The parent may have died before prctl took effect: then no signal comes.
        if os.getppid() != int(parent_pid):
            return 128 + int(signum)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"{argv[0]}: command not found", file=sys.stderr)
        return 127
    except OSError as err:
        print(f"{argv[0]}: {err.strerror}", file=sys.stderr)
        return 126


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
