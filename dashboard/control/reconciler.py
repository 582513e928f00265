"""Keeps every balancer replica at the operator's desired state.

Every pass (1 s) it reads the desired state from the database, reverts overrides
whose time is up, and compares each replica's latest snapshot (from the collector)
with it: a replica that lacks something — it restarted, came back after being down,
or missed a push — gets the commands that close the gap. Whether each replica
holds the desired state goes into the frames (`replicas[].converged`), where the
dashboard and the API read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from dashboard.collector.runner import Collector, ReplicaTarget
from dashboard.control.desired import Command, EndpointWant, ServiceWant, commands_for
from dashboard.control.models import AuditEvent, ClusterOverride, EndpointOverride
from dashboard.control.push import push, push_all

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


@dataclass(frozen=True)
class Expired:
    """An override whose time ran out: what to send to revert it, and its audit event."""

    audit_id: int
    commands: tuple[Command, ...]


def load_wants() -> list[ServiceWant]:
    """The desired state of every service, from the database."""
    endpoints: dict[str, dict[str, EndpointWant]] = {}
    for o in EndpointOverride.objects.all():
        endpoints.setdefault(o.service, {})[o.endpoint_id] = EndpointWant(
            o.endpoint_id, o.weight, o.drained, o.drain_timeout_s
        )
    policies = {c.service: c.policy for c in ClusterOverride.objects.all()}
    services = sorted(endpoints.keys() | policies.keys())
    return [ServiceWant(s, policies.get(s), endpoints.get(s, {})) for s in services]


def take_expired() -> list[Expired]:
    """Deletes the overrides whose `expires_at` has passed and says how to revert them."""
    now = timezone.now()
    expired: list[Expired] = []
    with transaction.atomic():
        for o in EndpointOverride.objects.select_for_update().filter(expires_at__lte=now):
            commands = [Command("weight", o.service, o.endpoint_id, weight=o.base_weight)]
            if o.drained:
                commands.append(Command("undrain", o.service, o.endpoint_id))
            before = {"weight": o.weight, "drained": o.drained}
            expired.append(
                Expired(_expiry_audit(o.service, o.endpoint_id, before), tuple(commands))
            )
            o.delete()
        for c in ClusterOverride.objects.select_for_update().filter(expires_at__lte=now):
            commands = [Command("policy", c.service, policy=c.base_policy)] if c.base_policy else []
            expired.append(
                Expired(_expiry_audit(c.service, c.service, {"policy": c.policy}), tuple(commands))
            )
            c.delete()
    return expired


def _expiry_audit(service: str, target: str, before: dict[str, object]) -> int:
    event = AuditEvent.objects.create(
        actor="ballast", source=AuditEvent.Source.SYSTEM, action="expire", service=service,
        target=target, before=before, after=None, result=AuditEvent.Result.OK,
        detail="the override's time ran out; reverted",
    )  # fmt: skip
    return int(event.pk)


def _mark_audit(audit_id: int, applied: bool, detail: str) -> None:
    result = AuditEvent.Result.OK if applied else AuditEvent.Result.PENDING
    AuditEvent.objects.filter(pk=audit_id).update(result=result, detail=detail)


class Reconciler:
    """Runs a reconciliation pass every `interval_s` beside `collector`: `start()`, `stop()`."""

    def __init__(
        self,
        collector: Collector,
        targets: Sequence[ReplicaTarget],
        *,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.collector = collector
        self.targets = tuple(targets)
        self.interval_s = interval_s
        self._pushed_at_ms: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("a reconciliation pass failed; the next one tries again")
            await asyncio.sleep(self.interval_s)

    async def reconcile_once(self) -> None:
        for expired in await sync_to_async(take_expired)():
            await self._revert(expired)
        wants = await sync_to_async(load_wants)()
        snapshots = self.collector.snapshots()
        for target in self.targets:
            snapshot = snapshots.get(target.id)
            if snapshot is None:
                continue  # down: judged again once it is back
            if snapshot.taken_at_unix_ms <= self._pushed_at_ms.get(target.id, 0):
                continue  # not seen since the last push: no judging an old picture
            commands = [c for want in wants for c in commands_for(want, snapshot)]
            self.collector.note_convergence(target.id, not commands)
            if commands:
                await self._apply(target, commands)

    async def _apply(self, target: ReplicaTarget, commands: list[Command]) -> None:
        what = ", ".join(c.describe() for c in commands)
        log.info("balancer %s lacks the desired state; sending %s", target.id, what)
        self._pushed_at_ms[target.id] = int(timezone.now().timestamp() * 1000)
        result = await push(target, commands)
        if not result.applied:
            log.warning("balancer %s did not take %s: %s", target.id, what, result.error)

    async def _revert(self, expired: Expired) -> None:
        up = [t for t in self.targets if self.collector.snapshots().get(t.id) is not None]
        results = await push_all(up, expired.commands) if expired.commands else []
        missed = [f"{r.replica}: {r.error}" for r in results if not r.applied]
        down = [f"{t.id}: down" for t in self.targets if t not in up]
        applied = not missed and not down
        await sync_to_async(_mark_audit)(expired.audit_id, applied, "; ".join(missed + down))
