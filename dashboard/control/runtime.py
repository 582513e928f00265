"""What the control plane reaches in this process: the event loop the balancers' admin
calls run on, the collector (embedded) and the platform (when one is configured).

`make demo` and `python -m dashboard` install them at start; the API reads them. Each
install names this process as the owner of the operations it starts (`owner_id`).
Without a collector here the replicas come from the settings and the observed state
from the frames this process receives.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dashboard.collector.runner import Collector, ReplicaTarget
from platforms.base import Platform

if TYPE_CHECKING:
    from dashboard.control.reconciler import Reconciler


@dataclass
class Runtime:
    loop: asyncio.AbstractEventLoop | None = None
    collector: Collector | None = None
    platform: Platform | None = None
    replicas: tuple[ReplicaTarget, ...] = ()
    owner: str = ""  # who runs the operations started here: `owner_id()`
    reconciler: Reconciler | None = None  # told of each act (`note_change`)


def owner_id() -> str:
    """``host:pid:random``, new for every start: an operation's owner, told apart from a
    process that had the same pid before (`parse_owner` reads it back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def parse_owner(owner: str) -> tuple[str, int | None]:
    """The host and pid of an owner id; (owner, None) when it is not one."""
    host, _, rest = owner.rpartition(":")[0].rpartition(":")
    pid = rest if host else ""
    return (host, int(pid)) if pid.isdigit() else (owner, None)


_current = Runtime()


def install(
    *,
    loop: asyncio.AbstractEventLoop,
    replicas: tuple[ReplicaTarget, ...],
    collector: Collector | None = None,
    platform: Platform | None = None,
    reconciler: Reconciler | None = None,
) -> None:
    global _current
    _current = Runtime(
        loop, collector, platform, tuple(replicas), owner_id(), reconciler=reconciler
    )


def current() -> Runtime:
    return _current


def reset() -> None:
    """Forgets what was installed (tests, and a process that stops serving)."""
    install_runtime(Runtime())


def install_runtime(runtime: Runtime) -> None:
    global _current
    _current = runtime
