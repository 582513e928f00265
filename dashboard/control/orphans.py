"""Operations whose dashboard process died: found, finished as failed, their drain undone.

An operation is orphaned when its owner (`runtime.owner_id()`: host, pid, a per-start
id) is not this process and either its heartbeat is older than `STALE_S`, or the
owner ran on this host and its pid is gone (or is this process now: a pid reused).
The `OrphanSweeper` beside the collector looks for them once the replicas have been
seen (an undrain needs them) and then every `SWEEP_S`, so one dashboard process takes
over a dead one's operations; a later restart of that service is then possible again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from balancer.lifecycle import OneTask, every
from dashboard.app.history import service_history
from dashboard.collector.runner import Collector
from dashboard.control import operations
from dashboard.control.actions import Actor
from dashboard.control.models import AuditEvent, EndpointOverride, Operation
from dashboard.control.operations import SYSTEM, stopped_detail, undo_drain
from dashboard.control.runtime import parse_owner

log = logging.getLogger(__name__)

STALE_S = 15.0  # beats every 2 s: seven missed beats
SWEEP_S = 5.0
FIRST_LOOK_S = 10.0  # at start, wait at most this long for every replica and frame
ORPHANED = "orphaned: the dashboard process running it stopped"
_ROLLOUT_POD = re.compile(r"pod \d+ of \d+: (\S+)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_orphaned(op: Operation, me: str, now: datetime | None = None) -> bool:
    """Whether running `op` has lost its owner (`me` is this process's owner id). One of
    this process's own is orphaned only when no task of it runs here (a bug ended it)
    and its heartbeat has stopped."""
    beat: datetime = op.heartbeat_at or op.updated_at
    stale = (now or timezone.now()) - beat > timedelta(seconds=STALE_S)
    if op.owner == me:
        return stale and not operations.runs_here(op.pk)
    host, pid = parse_owner(op.owner)
    here = host == socket.gethostname() and pid is not None
    return stale or (here and (pid == os.getpid() or not _pid_alive(pid or 0)))


def take_over(op: Operation, me: str) -> bool:
    """Makes this process the owner of `op` if no one else did since it was read: two
    dashboards sweeping at once finish each orphan once."""
    now = timezone.now()
    taken: int = (
        Operation.objects.filter(pk=op.pk, owner=op.owner, heartbeat_at=op.heartbeat_at)
        .exclude(step__in=Operation.FINISHED)
        .update(owner=me, heartbeat_at=now)
    )
    op.owner, op.heartbeat_at = me, now
    return taken == 1


def drained_pod(op: Operation) -> str:
    """The pod the operation was draining or restarting: a restart's target, or a
    rollout's current pod (its detail says which); "" when none."""
    if op.kind == Operation.Kind.RESTART:
        target: str = op.target
        return target
    found = _ROLLOUT_POD.search(op.detail)
    return found[1] if found else ""


def finish(op: Operation, actor: Actor, step: str, why: str) -> Operation:
    """Ends an operation no process runs any more (taken over first): undoes the drain
    it left (if its pod still has one), records `step` with the step it stopped at, and
    audits it as `actor`."""
    pod = drained_pod(op)
    left_drained = (
        pod
        and EndpointOverride.objects.filter(
            service=op.service, endpoint_id=pod, drained=True
        ).exists()
    )
    undone = undo_drain(actor, op.service, pod) if left_drained else ""
    stopped_at = op.step
    detail = stopped_detail(why, stopped_at, undone)
    with transaction.atomic():
        op.step, op.detail, op.finished_at = step, detail, timezone.now()
        op.save(update_fields=["step", "detail", "finished_at", "updated_at"])
        AuditEvent.objects.create(
            actor=actor.name, source=actor.source, token=actor.token, action=op.kind,
            service=op.service, target=op.target, before={"step": stopped_at},
            after={"operation": op.pk, "step": step}, result=AuditEvent.Result.FAILED,
            detail=detail,
        )  # fmt: skip
    log.warning("%s of %s finished: %s", op.kind, op.target, detail)
    return op


def _orphans(me: str, service: str | None) -> list[Operation]:
    running = Operation.objects.exclude(step__in=Operation.FINISHED)
    if service is not None:
        running = running.filter(service=service)
    return [op for op in running if is_orphaned(op, me)]


def recover(me: str, service: str | None = None) -> list[int]:
    """Finishes every orphaned operation (of `service`, or all) as failed; their ids."""
    recovered = []
    for op in _orphans(me, service):
        if take_over(op, me):
            finish(op, SYSTEM, Operation.Step.FAILED, ORPHANED)
            recovered.append(op.pk)
    return recovered


def recover_in_turn(me: str) -> list[int]:
    """`recover`, one act at a time with the API's (SQLite has no row locks)."""
    if not _orphans(me, None):
        return []
    from dashboard.control.api.base import ACTING  # the API's lock; imported when needed

    with ACTING:
        return recover(me)


class OrphanSweeper(OneTask):
    """Runs `recover` beside `collector`: first once the replicas were seen (or after
    `first_look_s`), then every `interval_s`. `start()`, `stop()`."""

    task_name = "orphan sweeper"

    def __init__(
        self,
        collector: Collector,
        owner: str,
        *,
        interval_s: float = SWEEP_S,
        first_look_s: float = FIRST_LOOK_S,
    ) -> None:
        self.collector = collector
        self.owner = owner
        self.interval_s = interval_s
        self.first_look_s = first_look_s

    def _seen_everything(self) -> bool:
        """Every replica answered and every service has a frame: an undrain reaches
        the replicas and finds the pod."""
        snapshots = self.collector.snapshots().values()
        frames = all(service_history().latest(s, 1) for s in settings.BALLAST_SERVICES)
        return all(s is not None for s in snapshots) and frames

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_look_s
        # The collector signals nothing to wait on: poll it, briefly, once.
        while not self._seen_everything() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        recover = sync_to_async(recover_in_turn)
        await every(
            self.interval_s,
            lambda: recover(self.owner),
            log,
            "looking for orphaned operations failed; trying again",
        )
