"""What the control plane reaches in this process: the event loop the balancers' admin
calls run on, the collector (embedded) and the platform (when one is configured).

`make demo` and `python -m dashboard` install them at start; the API reads them.
Without a collector here the replicas come from the settings and the observed state
from the frames this process receives.
"""

from __future__ import annotations

import asyncio
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
    reconciler: Reconciler | None = None  # told of each act (`note_change`)


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
    _current = Runtime(loop, collector, platform, tuple(replicas), reconciler=reconciler)


def current() -> Runtime:
    return _current


def reset() -> None:
    """Forgets what was installed (tests, and a process that stops serving)."""
    install_runtime(Runtime())


def install_runtime(runtime: Runtime) -> None:
    global _current
    _current = runtime
