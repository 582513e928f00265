"""Balancer replicas found, not listed: the endpoints of the balancers' admin Service.

On Kubernetes the balancer is a Deployment whose pods come and go; its headless admin
Service has one endpoint per replica, named by its pod. `ReplicaFollower` turns that
Service's discovery updates (`Reset | Add | Remove`, from the platform's EndpointSlice
watch) into the current set of `ReplicaTarget`s and hands each new set to `apply` (the
control plane: the collector's streams, the reconciler, the API's pushes).

Every endpoint counts, ready or not, terminating or not: a replica's admin API answers
before it is ready (so it gets the desired state before it takes calls) and while it
drains; once its pod is gone it leaves the slices and the set. Plain asyncio, no Django.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address
from balancer.lifecycle import OneTask
from dashboard.collector.runner import ReplicaTarget

log = logging.getLogger(__name__)

RETRY_S = 1.0  # the platform's watch retries on its own; this covers one that ends


def apply_update(known: Mapping[str, Address], update: Update) -> dict[str, Address]:
    """The endpoints by id after `update` (pure)."""
    if isinstance(update, Reset):
        return {a.endpoint_id: a for a in update.addresses}
    merged = dict(known)
    if isinstance(update, Add):
        merged.update({a.endpoint_id: a for a in update.addresses})
    elif isinstance(update, Remove):
        for endpoint_id in update.endpoint_ids:
            merged.pop(endpoint_id, None)
    return merged


class ReplicaFollower(OneTask):
    """Follows `watch()` (the admin Service's updates) and calls `apply` with the replicas,
    sorted by id, each time the set or an address changes. `target` makes a replica from
    an endpoint (its id, the pod name; its admin address; the token). `start()`, `stop()`.
    """

    task_name = "balancer replicas"

    def __init__(
        self,
        watch: Callable[[], AsyncIterator[Update]],
        target: Callable[[Address], ReplicaTarget],
        apply: Callable[[tuple[ReplicaTarget, ...]], None],
    ) -> None:
        self._watch = watch
        self._target = target
        self._apply = apply
        self._endpoints: dict[str, Address] = {}
        self._applied: tuple[ReplicaTarget, ...] | None = None

    def replicas(self) -> tuple[ReplicaTarget, ...]:
        """The replicas the last update gave, by id."""
        return tuple(self._target(self._endpoints[k]) for k in sorted(self._endpoints))

    def observe(self, update: Update) -> None:
        """Takes one update; calls `apply` when the replicas changed."""
        self._endpoints = apply_update(self._endpoints, update)
        replicas = self.replicas()
        if replicas != self._applied:
            before = {t.id for t in self._applied or ()}
            now = {t.id for t in replicas}
            if now - before or before - now:
                log.info(
                    "balancer replicas: %s (came: %s; went: %s)",
                    ", ".join(sorted(now)) or "none",
                    ", ".join(sorted(now - before)) or "none",
                    ", ".join(sorted(before - now)) or "none",
                )
            self._applied = replicas
            self._apply(replicas)

    async def _run(self) -> None:
        while True:
            try:
                async for update in self._watch():
                    self.observe(update)
                log.warning("the balancer replicas' watch ended; starting it again")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the balancer replicas failed; trying again")
            await asyncio.sleep(RETRY_S)
