"""Restarts that lose no request: drain first, wait for the calls in flight, restart through
the platform, wait for the new pod to be ready (slow start then ramps it in).

`start_restart` and `start_rollout_restart` run in the API's worker thread: they refuse
a second operation on a service while one runs (409), record the operation and its
audit event, and hand the steps to the event loop the platform lives on. The steps
record their progress on the `Operation` row (draining → drained → restarting →
waiting_ready → done), which the API and the dashboard show.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from balancer.admin.v1.admin_pb2 import EndpointSnapshot
from dashboard.collector.rates import state_name
from dashboard.control import actions, runtime
from dashboard.control.actions import Actor, Conflict, Unavailable
from dashboard.control.desired import endpoint_view
from dashboard.control.models import AuditEvent, EndpointOverride, Operation
from platforms.base import Platform

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0  # calls still running then are cancelled (UNAVAILABLE, retryable)
READY_TIMEOUT_S = 120.0
POLL_S = 0.2


class OperationFailed(Exception):
    pass


def _platform() -> Platform:
    platform = runtime.current().platform
    if platform is None or runtime.current().loop is None:
        raise Unavailable(
            "no platform is configured in this dashboard process, so it cannot restart pods"
            " (make demo runs the local platform; Kubernetes needs its settings)"
        )
    return platform


def _begin(actor: Actor, kind: str, service: str, target: str) -> Operation:
    with transaction.atomic():
        running = (
            Operation.objects.select_for_update()
            .filter(service=service)
            .exclude(step__in=Operation.FINISHED)
            .first()
        )
        if running is not None:
            raise Conflict(
                f"a {running.kind.replace('_', ' ')} of {running.target} is running"
                f" ({running.step}); wait for it to finish"
            )
        operation: Operation = Operation.objects.create(
            kind=kind, service=service, target=target, actor=actor.name
        )
        AuditEvent.objects.create(
            actor=actor.name, source=actor.source, token=actor.token, action=kind,
            service=service, target=target, before=None, after={"operation": operation.pk},
            result=AuditEvent.Result.PENDING, detail="started",
        )  # fmt: skip
    return operation


def start_restart(actor: Actor, service: str, pod: str) -> Operation:
    """Starts restarting `pod` of `service`; returns the running operation."""
    actions.balanced_pod(service, pod)
    platform = _platform()
    operation = _begin(actor, Operation.Kind.RESTART, service, pod)
    _schedule(_run(operation.pk, actor, lambda op: _restart_one(op, actor, platform, pod)))
    return operation


def start_rollout_restart(actor: Actor, service: str) -> Operation:
    """Starts restarting every pod of the service's deployment, one at a time."""
    actions.known_service(service)
    platform = _platform()
    operation = _begin(actor, Operation.Kind.ROLLOUT_RESTART, service, service)

    async def rollout(op: Operation) -> None:
        pods = [p.name for p in await platform.list_pods(service)]
        for i, pod in enumerate(pods, 1):
            await _note(op, detail=f"pod {i} of {len(pods)}: {pod}")
            await _restart_one(op, actor, platform, pod)

    _schedule(_run(operation.pk, actor, rollout))
    return operation


_tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references


def _schedule(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs `coroutine` on the platform's loop, from the API's worker thread.

    In a fresh context: one copied from this worker thread would tell asgiref the task
    runs inside the worker, and its database calls would refuse to deadlock.
    """
    loop = runtime.current().loop
    assert loop is not None

    def create() -> None:
        task = loop.create_task(coroutine)
        _tasks.add(task)
        task.add_done_callback(_forget)

    loop.call_soon_threadsafe(create, context=contextvars.Context())


def _forget(task: asyncio.Task[None]) -> None:
    """`_run` records every failure on the operation; what escapes it is a bug."""
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("an operation's task failed", exc_info=task.exception())


async def _run(
    operation_id: int, actor: Actor, steps: Callable[[Operation], Awaitable[None]]
) -> None:
    op = await Operation.objects.aget(pk=operation_id)
    try:
        await steps(op)
    except Exception as err:
        log.warning("%s of %s failed: %s", op.kind, op.target, err)
        await _note(op, step=Operation.Step.FAILED, detail=str(err), finished=True)
        await _audit_end(op, actor, AuditEvent.Result.FAILED, str(err))
    else:
        await _note(op, step=Operation.Step.DONE, finished=True)
        await _audit_end(op, actor, AuditEvent.Result.OK, op.detail)


async def _restart_one(op: Operation, actor: Actor, platform: Platform, pod: str) -> None:
    service = op.service
    await _note(op, step=Operation.Step.DRAINING)
    await sync_to_async(actions.drain)(actor, service, pod, timeout_s=DRAIN_TIMEOUT_S)
    try:
        await _wait(lambda: _drained_everywhere(service, pod), DRAIN_TIMEOUT_S + 5, "drained")
        await _note(op, step=Operation.Step.DRAINED)
        before = {p.name for p in await platform.list_pods(service)}
        await _note(op, step=Operation.Step.RESTARTING)
        await platform.restart_pod(pod)
    except BaseException:
        # Not restarted: give the pod its traffic back rather than leave it drained.
        await sync_to_async(actions.undrain)(actor, service, pod)
        raise
    await EndpointOverride.objects.filter(service=service, endpoint_id=pod).adelete()
    new = ""

    async def new_pod_ready() -> bool:
        nonlocal new
        pods = await platform.list_pods(service)
        fresh = [p for p in pods if p.name not in before]
        new = fresh[0].name if fresh else ""
        return bool(fresh) and fresh[0].ready and _ready_everywhere(service, new)

    await _note(op, step=Operation.Step.WAITING_READY)
    await _wait(new_pod_ready, READY_TIMEOUT_S, f"the replacement of {pod} to be ready")
    await _note(op, new_pod=new)


async def _wait(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        met = condition()
        if not isinstance(met, bool):
            met = await met
        if met:
            return
        if loop.time() > deadline:
            raise OperationFailed(f"gave up after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def _up_views(service: str) -> list[dict[str, EndpointSnapshot]]:
    collector = runtime.current().collector
    if collector is None:
        raise OperationFailed("no collector in this process to watch the balancers")
    return [endpoint_view(s, service) for s in collector.snapshots().values() if s is not None]


def _drained_everywhere(service: str, pod: str) -> bool:
    """No replica that is up still has calls in flight to the pod (or still routes to it)."""
    for view in _up_views(service):
        endpoint = view.get(pod)
        if endpoint is not None and state_name(endpoint.state) != "DRAINED":
            return False
    return True


def _ready_everywhere(service: str, pod: str) -> bool:
    """Every replica that is up routes to the pod."""
    views = _up_views(service)
    return bool(views) and all(
        pod in view and state_name(view[pod].state) == "READY" for view in views
    )


async def _note(
    op: Operation, *, step: str | None = None, detail: str | None = None,
    new_pod: str | None = None, finished: bool = False,
) -> None:  # fmt: skip
    if step is not None:
        op.step = step
    if detail is not None:
        op.detail = detail
    if new_pod is not None:
        op.new_pod = new_pod
    if finished:
        op.finished_at = timezone.now()
    await op.asave()


async def _audit_end(op: Operation, actor: Actor, result: str, detail: str) -> None:
    await AuditEvent.objects.acreate(
        actor=actor.name, source=actor.source, token=actor.token, action=op.kind,
        service=op.service, target=op.target, before=None,
        after={"operation": op.pk, "step": op.step, "new_pod": op.new_pod or None},
        result=result, detail=detail or "finished",
    )  # fmt: skip
