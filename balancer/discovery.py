"""Endpoint discovery: a stream of membership updates per cluster.

Platforms (local processes, Kubernetes) implement `Discovery`; the balancer
applies `Reset | Add | Remove` to a cluster's endpoint set. Readiness reported
by discovery (a Kubernetes `ready` condition) comes in `Add`: an address that
discovery says is not ready is not routed to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from balancer.endpoint import Address


@dataclass(frozen=True)
class Reset:
    """The complete set: endpoints not listed are removed."""

    addresses: tuple[Address, ...]


@dataclass(frozen=True)
class Add:
    """New endpoints, or updates to known ones (same endpoint id)."""

    addresses: tuple[Address, ...]


@dataclass(frozen=True)
class Remove:
    endpoint_ids: tuple[str, ...]


Update = Reset | Add | Remove


class Discovery(Protocol):
    def watch(self) -> AsyncIterator[Update]:
        """Yields updates until cancelled; the first one is a Reset."""


class StaticDiscovery:
    """A fixed list of addresses from the config: one Reset, then nothing."""

    def __init__(self, addresses: Sequence[Address]) -> None:
        self._addresses = tuple(addresses)

    async def watch(self) -> AsyncIterator[Update]:
        yield Reset(self._addresses)
        await asyncio.Event().wait()  # static: nothing more will ever change
