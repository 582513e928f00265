"""Keeps every balancer replica at the operator's desired state, level-triggered.

Every pass (1 s) it deletes (and audits) overrides whose time is up, reads the whole
desired state from the database and compares each replica's latest snapshot (from
the collector) with it, field by field (`desired.commands_for`): whatever a replica
lacks — it restarted, was down or paused while a change was sent, or an override
expired — it gets the commands that close the gap. There is no special path for
reverts: a cleared or expired override is simply no longer desired, and the
configured defaults are.

Whether each replica holds the desired state goes into the frames
(`replicas[].converged`), where the dashboard and the API read it. It is True only
when a snapshot taken after the last change (an act's audit event, an override's
update, this reconciler's own push) needs no command; False while a change is not
seen on the replica yet or it lacks something; None when its newest snapshot is too
old to judge (a paused replica, before the collector gives up on it) or it is down.

Audit events pending on replicas that were down (`AuditEvent.pending_replicas`)
are settled here: once a replica is seen holding the desired state, it is taken off
the list and the detail says when; an event with no replica left becomes ok.

Pods come and go with new names: an override on a pod that neither the platform (its
last list of the service's pods) nor any replica that is up has reported for
`pod_gone_grace_s` is ended — deleted and audited by the system as "pod gone". Nothing
is judged gone while no replica is up, or before the platform's first list.

Replica snapshots are stamped with the replica's clock and changes with this
process's: the two are assumed to agree to well under a second (NTP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from balancer.admin.v1 import admin_pb2
from balancer.lifecycle import OneTask, every
from dashboard.collector.runner import Collector, ReplicaTarget
from dashboard.control import automation
from dashboard.control.desired import (
    Command,
    EndpointWant,
    ServiceWant,
    commands_for,
    endpoint_view,
)
from dashboard.control.models import AuditEvent, ClusterOverride, EndpointOverride, Operation
from dashboard.control.push import push

log = logging.getLogger(__name__)


INTERVAL_S = 1.0
# How long a pod must be missing from the platform and every replica before an override
# on it ends: longer than a replica takes to reconnect and the platform to list again.
POD_GONE_GRACE_S = 60.0
POD_GONE = "pod_gone"
# A snapshot older than this many collector intervals (and at least STALE_MIN_S) says
# nothing about the replica now: it is not judged (a paused replica's last picture).
STALE_INTERVALS = 4
STALE_MIN_S = 2.0
# Pending audit events are read this many at a time (only those still pending on a
# replica: acts made while one was down).
PENDING_CHUNK = 200
# The acts whose audit event marks a change of the desired state that was pushed.
CHANGES = ("set_weight", "drain", "undrain", "clear", "set_policy", "clear_policy", "expire",
           *automation.CHANGES)  # fmt: skip


@dataclass(frozen=True)
class Desired:
    """The desired state of every service, and when it last changed (unix ms)."""

    wants: tuple[ServiceWant, ...]
    changed_at_ms: int = 0
    read_at_ms: int = 0  # when reading it began


def _unix_ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at is not None else 0


def load_desired(clusters: Mapping[str, str]) -> Desired:
    """The desired state from the database: every service in `clusters` (service →
    balancer cluster), and any other that has an override."""
    endpoints: dict[str, dict[str, EndpointWant]] = {}
    changed = 0
    for o in EndpointOverride.objects.all():
        endpoints.setdefault(o.service, {})[o.endpoint_id] = EndpointWant(
            o.endpoint_id, o.weight, o.drained, o.drain_timeout_s
        )
        changed = max(changed, _unix_ms(o.updated_at))
    policies: dict[str, str] = {}
    for c in ClusterOverride.objects.all():
        policies[c.service] = c.policy
        changed = max(changed, _unix_ms(c.updated_at))
    autos, auto_changed = automation.desired_auto_weights()
    _add_auto_weights(endpoints, autos)
    changed = max(changed, auto_changed)
    restarting, rolling_out = _running_operations()
    services = sorted(clusters.keys() | endpoints.keys() | policies.keys())
    wants = tuple(
        ServiceWant(
            clusters.get(s, s),
            policies.get(s),
            endpoints.get(s, {}),
            restarting=frozenset(restarting.get(s, ())),
            rolling_out=s in rolling_out,
        )
        for s in services
    )
    return Desired(wants, max(changed, _last_change_ms()))


def _add_auto_weights(
    endpoints: dict[str, dict[str, EndpointWant]], autos: Mapping[str, Mapping[str, int]]
) -> None:
    """Each auto weight joins its endpoint's want (the operator's weight still wins)."""
    for service, weights in autos.items():
        wants = endpoints.setdefault(service, {})
        for endpoint, weight in weights.items():
            want = wants.get(endpoint) or EndpointWant(endpoint)
            wants[endpoint] = replace(want, auto_weight=weight)


def _running_operations() -> tuple[dict[str, set[str]], set[str]]:
    """The pods a running restart owns, by service, and the services a rollout runs on."""
    restarting: dict[str, set[str]] = {}
    rolling_out: set[str] = set()
    running = Operation.objects.exclude(step__in=Operation.FINISHED).values_list(
        "kind", "service", "target"
    )
    for kind, service, target in running:
        if kind == Operation.Kind.ROLLOUT_RESTART:
            rolling_out.add(service)
        else:
            restarting.setdefault(service, set()).add(target)
    return restarting, rolling_out


def _last_change_ms() -> int:
    """When the newest act that changed the desired state (a deleted override leaves
    only its audit event) was recorded."""
    newest = (
        AuditEvent.objects.filter(action__in=CHANGES)
        .exclude(result=AuditEvent.Result.DENIED)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    return _unix_ms(newest)


def expire_overrides(replica_ids: Sequence[str]) -> int:
    """Deletes the overrides whose `expires_at` has passed, each with an audit event
    pending on every replica until it is seen back at the configured state (the next
    pass sends what that takes). Returns how many expired."""
    now = timezone.now()
    expired = 0
    with transaction.atomic():
        for o in EndpointOverride.objects.select_for_update().filter(expires_at__lte=now):
            before = {"weight": o.weight, "drained": o.drained}
            _expiry_audit(o.service, o.endpoint_id, before, replica_ids)
            o.delete()
            expired += 1
        for c in ClusterOverride.objects.select_for_update().filter(expires_at__lte=now):
            _expiry_audit(c.service, c.service, {"policy": c.policy}, replica_ids)
            c.delete()
            expired += 1
    return expired


def _expiry_audit(
    service: str, target: str, before: dict[str, object], replica_ids: Sequence[str]
) -> None:
    result = AuditEvent.Result.PENDING if replica_ids else AuditEvent.Result.OK
    AuditEvent.objects.create(
        actor="ballast", source=AuditEvent.Source.SYSTEM, action="expire", service=service,
        target=target, before=before, after=None, result=result,
        detail="the override's time ran out", pending_replicas=list(replica_ids),
    )  # fmt: skip


def settle_pending(held_at_ms: Mapping[str, int], configured: Iterable[str]) -> int:
    """Takes each replica in `held_at_ms` (seen holding the desired state in a snapshot
    taken at that unix ms) off the pending audit events recorded before it, and any
    replica no longer `configured` (it never will be); an event with none left becomes
    ok. Only pending events are read, a chunk at a time. Returns how many changed."""
    known = set(configured)
    settled = 0
    events = (
        AuditEvent.objects.filter(result=AuditEvent.Result.PENDING)
        .filter(pending_replicas__0__isnull=False)
        .order_by("at", "id")
    )
    for event in events.iterator(chunk_size=PENDING_CHUNK):
        at_ms = _unix_ms(event.at)
        done = [r for r in event.pending_replicas if held_at_ms.get(r, 0) >= at_ms]
        gone = [r for r in event.pending_replicas if r not in known]
        if done or gone:
            _settle(event, done, gone, held_at_ms)
            settled += 1
    return settled


def _settle(
    event: AuditEvent, done: Sequence[str], gone: Sequence[str], held_at_ms: Mapping[str, int]
) -> None:
    notes = [f"applied on {r} at {_utc(held_at_ms[r])}" for r in done]
    notes += [f"{r} is no longer configured" for r in gone if r not in done]
    event.pending_replicas = [r for r in event.pending_replicas if r not in {*done, *gone}]
    event.detail = "; ".join([event.detail, *notes] if event.detail else notes)
    if not event.pending_replicas:
        event.result = AuditEvent.Result.OK
    event.save(update_fields=["pending_replicas", "detail", "result"])


def overridden_endpoints() -> list[tuple[str, str]]:
    """(service, endpoint) of every endpoint override, but those a running restart owns
    (it ends its own override)."""
    restarting, _ = _running_operations()
    return [
        (service, endpoint)
        for service, endpoint in EndpointOverride.objects.values_list("service", "endpoint_id")
        if endpoint not in restarting.get(service, ())
    ]


def end_gone_overrides(gone: Iterable[tuple[str, str]], grace_s: float) -> int:
    """Deletes the overrides of pods that are gone, each audited (system, "pod gone").
    Returns how many ended."""
    ended = 0
    with transaction.atomic():
        for service, endpoint in gone:
            for o in EndpointOverride.objects.select_for_update().filter(
                service=service, endpoint_id=endpoint
            ):
                AuditEvent.objects.create(
                    actor="ballast", source=AuditEvent.Source.SYSTEM, action=POD_GONE,
                    service=service, target=endpoint,
                    before={"weight": o.weight, "drained": o.drained}, after=None,
                    result=AuditEvent.Result.OK,
                    detail=f"pod gone: neither the platform nor any balancer has reported it"
                    f" for {grace_s:g} s; its override ended",
                )  # fmt: skip
                o.delete()
                ended += 1
    return ended


def _utc(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Reconciler(OneTask):
    """Runs a reconciliation pass every `interval_s` beside `collector`: `start()`, `stop()`.

    `clock` gives the wall time (unix seconds) snapshots are judged fresh by.
    """

    task_name = "reconciler"

    def __init__(
        self,
        collector: Collector,
        targets: Sequence[ReplicaTarget],
        *,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
        pod_gone_grace_s: float = POD_GONE_GRACE_S,
    ) -> None:
        self.collector = collector
        self.targets = tuple(targets)
        self.interval_s = interval_s
        self.pod_gone_grace_s = pod_gone_grace_s
        self._missing_since: dict[tuple[str, str], float] = {}
        self._clock = clock
        self._stale_ms = 1000 * max(STALE_MIN_S, STALE_INTERVALS * collector.config.interval_s)
        self._clusters = {s: t.cluster for s, t in collector.config.services.items()}
        self._pushed_at_ms: dict[str, int] = {}
        self._noted_change_ms = 0

    def set_targets(self, targets: Sequence[ReplicaTarget]) -> None:
        """The replicas from now on (found by discovery): a new one is judged, and given
        what it lacks, from its first snapshot; what was kept of one that left goes."""
        self.targets = tuple(targets)
        ids = {t.id for t in self.targets}
        self._pushed_at_ms = {k: v for k, v in self._pushed_at_ms.items() if k in ids}

    def note_change(self) -> None:
        """An act changed the desired state and pushes it (`actions`, on this loop): no
        replica is known to hold it until a snapshot after it says so. The passes share
        the acts' database thread, so one may be held up while an act waits on a paused
        replica; this keeps its replicas from showing as converged meanwhile."""
        self._noted_change_ms = self._now_ms()
        for target in self.targets:
            self.collector.note_convergence(target.id, False)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _run(self) -> None:
        await every(
            self.interval_s,
            self.reconcile_once,
            log,
            "a reconciliation pass failed; the next one tries again",
        )

    async def reconcile_once(self) -> None:
        await sync_to_async(expire_overrides)([t.id for t in self.targets])
        await self.end_gone_pods()
        # Snapshots first, then the desired state: a snapshot showing a change was taken
        # after the change was saved, so the desired state read next includes it. Read
        # the other way round, a pass could undo a change made between the two reads.
        snapshots = self.collector.snapshots()
        read_at_ms = self._now_ms()
        desired = replace(await sync_to_async(load_desired)(self._clusters), read_at_ms=read_at_ms)
        # Judged and noted at once (no await in between: a change noted meanwhile wins).
        held: dict[str, int] = {}
        sends: list[tuple[ReplicaTarget, list[Command]]] = []
        for target in self.targets:
            snapshot = snapshots.get(target.id)
            if snapshot is None:
                continue  # down: the collector shows it so, and it is judged once back
            verdict, commands = self._judge(target, snapshot, desired)
            self.collector.note_convergence(target.id, verdict)
            if verdict is True:
                held[target.id] = snapshot.taken_at_unix_ms
            if commands:
                sends.append((target, commands))
        await asyncio.gather(*(self._apply(target, commands) for target, commands in sends))
        if held:
            await sync_to_async(settle_pending)(held, [t.id for t in self.targets])

    async def end_gone_pods(self) -> None:
        """Ends the overrides of pods missing for `pod_gone_grace_s` (see the module)."""
        overridden = await sync_to_async(overridden_endpoints)()
        now = self._clock()
        missing = self._missing(overridden)
        self._missing_since = {k: self._missing_since.get(k, now) for k in missing}
        gone = [
            k for k, since in self._missing_since.items() if now - since >= self.pod_gone_grace_s
        ]
        if gone:
            ended = await sync_to_async(end_gone_overrides)(gone, self.pod_gone_grace_s)
            log.info("ended %d override(s) of pods that are gone: %s", ended, gone)
            for k in gone:
                self._missing_since.pop(k, None)

    def _missing(self, overridden: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The overridden endpoints no up replica and no platform list reports now; none
        while no replica is up, or the platform has not listed the service's pods."""
        snapshots = [s for s in self.collector.snapshots().values() if s is not None]
        if not snapshots:
            return set()
        services = self.collector.config.services
        missing = set()
        for service, endpoint in overridden:
            target = services.get(service)
            cluster = target.cluster if target is not None else service
            if any(endpoint in endpoint_view(s, cluster) for s in snapshots):
                continue
            pods = self.collector.pods(target.deployment if target is not None else service)
            if pods is None and self.collector.lists_pods:
                continue  # not listed yet: cannot tell
            if not any(p.name == endpoint for p in pods or ()):
                missing.add((service, endpoint))
        return missing

    def _judge(
        self, target: ReplicaTarget, snapshot: admin_pb2.Snapshot, desired: Desired
    ) -> tuple[bool | None, list[Command]]:
        """Whether the replica holds `desired` (None: cannot tell), and what it lacks."""
        taken_ms = snapshot.taken_at_unix_ms
        if self._now_ms() - taken_ms > self._stale_ms:
            return None, []  # an old picture says nothing about the replica now
        if self._noted_change_ms >= desired.read_at_ms:
            return False, []  # an act changed the desired state while it was being read
        changed_ms = max(desired.changed_at_ms, self._noted_change_ms)
        if taken_ms <= max(changed_ms, self._pushed_at_ms.get(target.id, 0)):
            return False, []  # not seen since the last change: no acting on an old picture
        commands = [c for want in desired.wants for c in commands_for(want, snapshot)]
        return not commands, commands

    async def _apply(self, target: ReplicaTarget, commands: list[Command]) -> None:
        what = ", ".join(c.describe() for c in commands)
        log.info("balancer %s lacks the desired state; sending %s", target.id, what)
        result = await push(target, commands)
        # From the end of the push: a snapshot taken while it ran may not show it yet.
        self._pushed_at_ms[target.id] = self._now_ms()
        if not result.applied:
            log.warning("balancer %s did not take %s: %s", target.id, what, result.error)
