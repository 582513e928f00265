"""Restarts that lose no request: drain first, wait for the calls in flight, restart through
the platform, wait for the new pod to be ready (slow start then ramps it in).

`start_restart` and `start_rollout_restart` run in the API's worker thread: they refuse
a second operation on a service while one runs (409), record the operation and its
audit event, and hand the steps to the event loop the platform lives on. The steps
record their progress on the `Operation` row (draining → drained → restarting →
waiting_ready → done), which the API and the dashboard show.

Each operation has an owner, the dashboard process running its steps
(`runtime.owner_id()`), which beats its `heartbeat_at` every `HEARTBEAT_S` while they
run; another process finishes it once the beat stops (`orphans.py`). An operation
stops early at its next check when an operator cancels it (`request_cancel`) or this
process stops (`stop_owned`): a pod not restarted yet gets its traffic back, and the
operation ends cancelled or failed with the step it stopped at.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from balancer.admin.v1.admin_pb2 import EndpointSnapshot
from dashboard.collector.rates import state_name
from dashboard.control import actions, runtime
from dashboard.control.actions import Actor, Conflict, NotFound, Unavailable
from dashboard.control.desired import endpoint_view
from dashboard.control.models import AuditEvent, EndpointOverride, Operation
from platforms.base import Platform, RestartRefused, UnknownPod

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0  # calls still running then are cancelled (UNAVAILABLE, retryable)
READY_TIMEOUT_S = 120.0
POLL_S = 0.2
HEARTBEAT_S = 2.0  # the owner says it still runs the steps this often
STOP_TIMEOUT_S = 10.0  # a stopping process waits this long for its operations' checks
SYSTEM = Actor("ballast", source=AuditEvent.Source.SYSTEM)
SHUTDOWN = "the dashboard process running it stopped"


class OperationFailed(Exception):
    pass


class Stopped(Exception):
    """Raised at an operation's next check once it was asked to stop."""


@dataclass(frozen=True)
class StopRequest:
    """Why an operation stops early, the step it then ends at and who to audit."""

    why: str
    step: str
    actor: Actor


@dataclass
class _Handle:
    """An operation this process runs: its task, and once asked, why it stops."""

    stop: StopRequest | None = None
    undone: str = ""  # what was undone on the way out ("pod X undrained")
    task: asyncio.Task[None] | None = None


_handles: dict[int, _Handle] = {}  # on the platform's loop only


def _platform() -> Platform:
    platform = runtime.current().platform
    if platform is None or runtime.current().loop is None:
        raise Unavailable(
            "no platform is configured in this dashboard process, so it cannot restart pods"
            " (make demo runs the local platform; Kubernetes needs its settings)"
        )
    return platform


def _begin(actor: Actor, kind: str, service: str, target: str) -> Operation:
    """Records the operation, owned by this process; Conflict while another runs for the
    service. One whose process is gone is finished first rather than blocking."""
    from dashboard.control import orphans  # it uses this module's undo_drain

    orphans.recover(runtime.current().owner, service)
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
            kind=kind, service=service, target=target, actor=actor.name,
            owner=runtime.current().owner, heartbeat_at=timezone.now(),
        )  # fmt: skip
        AuditEvent.objects.create(
            actor=actor.name, source=actor.source, token=actor.token, action=kind,
            service=service, target=target, before=None, after={"operation": operation.pk},
            result=AuditEvent.Result.PENDING, detail="started",
        )  # fmt: skip
    return operation


CHECK_TIMEOUT_S = 15.0  # the platform's answer to "may this pod be restarted now?"


def _check_restart(actor: Actor, platform: Platform, service: str, pod: str) -> None:
    """Asks the platform whether the pod may be restarted now, when it can tell without
    acting (Kubernetes: a dry-run eviction): Conflict with the platform's reason (a
    PodDisruptionBudget's), audited, before anything is drained."""
    check = getattr(platform, "check_restart", None)
    loop = runtime.current().loop
    if check is None or loop is None:
        return
    future = asyncio.run_coroutine_threadsafe(check(pod), loop)
    try:
        future.result(timeout=CHECK_TIMEOUT_S)
    except (UnknownPod, RestartRefused) as err:
        AuditEvent.objects.create(
            actor=actor.name, source=actor.source, token=actor.token,
            action=Operation.Kind.RESTART, service=service, target=pod, before=None,
            after=None, result=AuditEvent.Result.FAILED, detail=str(err),
        )  # fmt: skip
        raise (NotFound if isinstance(err, UnknownPod) else Conflict)(str(err)) from None
    except Exception as err:  # the API in trouble: the eviction itself will say why
        future.cancel()
        log.warning("could not ask whether pod %s may be restarted now: %s", pod, err)


def start_restart(actor: Actor, service: str, pod: str) -> Operation:
    """Starts restarting `pod` of `service`; returns the running operation. Conflict
    (409) at once when the platform already refuses (a PodDisruptionBudget)."""
    actions.balanced_pod(service, pod)
    platform = _platform()
    _check_restart(actor, platform, service, pod)
    operation = _begin(actor, Operation.Kind.RESTART, service, pod)
    steps = _run(operation.pk, actor, lambda op: _restart_one(op, actor, platform, pod))
    _schedule(operation.pk, steps)
    return operation


def start_rollout_restart(actor: Actor, service: str) -> Operation:
    """Starts restarting every pod of the service's deployment, one at a time: pod by
    pod through `_restart_one`, or, on a platform that rolls out itself (Kubernetes),
    by its own rolling update, whose progress the operation's detail shows."""
    actions.known_service(service)
    platform = _platform()
    operation = _begin(actor, Operation.Kind.ROLLOUT_RESTART, service, service)
    if getattr(platform, "rolls_out_itself", False):
        steps = _run(operation.pk, actor, lambda op: _platform_rollout(op, platform))
        _schedule(operation.pk, steps)
        return operation

    async def rollout(op: Operation) -> None:
        pods = [p.name for p in await platform.list_pods(service)]
        for i, pod in enumerate(pods, 1):
            _check(op)
            await _note(op, detail=f"pod {i} of {len(pods)}: {pod}")
            await _restart_one(op, actor, platform, pod)

    _schedule(operation.pk, _run(operation.pk, actor, rollout))
    return operation


_tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references


def _schedule(operation_id: int, coroutine: Coroutine[Any, Any, None]) -> None:
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
        _handles[operation_id] = _Handle(task=task)

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
    handle = _handles.setdefault(operation_id, _Handle())
    beat = asyncio.create_task(_beat(op.pk, handle), name=f"operation {op.pk} heartbeat")
    try:
        await steps(op)
    except (Stopped, asyncio.CancelledError):
        # Cancelled by `stop_owned` after its wait: the process is going, finish the row.
        stop = handle.stop or StopRequest(SHUTDOWN, Operation.Step.FAILED, SYSTEM)
        detail = stopped_detail(stop.why, op.step, handle.undone)
        log.warning("%s of %s stopped: %s", op.kind, op.target, detail)
        await _note(op, step=stop.step, detail=detail, finished=True)
        await _audit_end(op, stop.actor, AuditEvent.Result.FAILED, detail)
    except Exception as err:
        detail = f"{err}; {handle.undone}" if handle.undone else str(err)
        log.warning("%s of %s failed: %s", op.kind, op.target, detail)
        await _note(op, step=Operation.Step.FAILED, detail=detail, finished=True)
        await _audit_end(op, actor, AuditEvent.Result.FAILED, detail)
    else:
        await _note(op, step=Operation.Step.DONE, finished=True)
        await _audit_end(op, actor, AuditEvent.Result.OK, op.detail)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        _handles.pop(operation_id, None)


def stopped_detail(why: str, step: str, undone: str) -> str:
    """How an operation that stopped early ended, for its detail and audit event:
    "cancelled by bob during step draining; pod X undrained"."""
    return f"{why} during step {step}" + (f"; {undone}" if undone else "")


async def _beat(operation_id: int, handle: _Handle) -> None:
    """Every `HEARTBEAT_S`: says the owner still runs the operation, and looks whether an
    operator (through another process, maybe) asked to cancel it."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await Operation.objects.filter(pk=operation_id).aupdate(heartbeat_at=timezone.now())
            if (
                handle.stop is None
                and await Operation.objects.filter(pk=operation_id, cancel_requested=True).aexists()
            ):
                asked = await sync_to_async(_cancel_request)(operation_id)
                handle.stop = handle.stop or asked
        except Exception:  # the database away for a moment: beat again next time
            log.warning("operation %s: its heartbeat failed", operation_id, exc_info=True)


def _check(op: Operation) -> None:
    """Raises Stopped once the operation was asked to stop (cancelled, or shutdown)."""
    handle = _handles.get(op.pk)
    if handle is not None and handle.stop is not None:
        raise Stopped(handle.stop.why)


def _stop_actor(op: Operation, actor: Actor) -> Actor:
    """Who the steps undo a drain as: whoever stopped the operation, else its actor."""
    handle = _handles.get(op.pk)
    return handle.stop.actor if handle is not None and handle.stop is not None else actor


class RollsOut(Protocol):
    """A platform whose rollout restart is its own rolling update, followed by `progress`."""

    async def rollout_restart(
        self, deployment: str, progress: Callable[[str], None] | None = None
    ) -> None: ...


ROLLOUT_GOES_ON = "the platform's rollout goes on (it replaces the pods itself)"


async def _platform_rollout(op: Operation, platform: Platform) -> None:
    """The platform's own rollout restart (Kubernetes: the Deployment's rolling update;
    discovery drains each terminating pod's endpoint), its progress in the detail, then
    until every ready pod is READY on every balancer."""
    service = op.service
    rolling: RollsOut = platform  # type: ignore[assignment]
    await _note(op, step=Operation.Step.RESTARTING, detail="rollout restart requested")
    states: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(rolling.rollout_restart(service, progress=states.put_nowait))
    try:
        await _follow(op, task, states)
    except BaseException:
        if (handle := _handles.get(op.pk)) is not None and not task.done():
            handle.undone = ROLLOUT_GOES_ON
        raise
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await _note(op, step=Operation.Step.WAITING_READY)
    await _wait(
        lambda: _pods_ready_everywhere(service, platform),
        READY_TIMEOUT_S, "every ready pod to be READY on every balancer", op,
    )  # fmt: skip


async def _follow(op: Operation, task: asyncio.Task[None], states: asyncio.Queue[str]) -> None:
    """Notes each progress state of `task` in the detail until it ends (raises what it
    raised); stops at once when the operation is asked to."""
    while True:
        await asyncio.wait({task}, timeout=POLL_S)
        latest = ""
        while not states.empty():
            latest = states.get_nowait()
        if latest:
            await _note(op, detail=latest)
        if task.done():
            task.result()
            return
        _check(op)


async def _pods_ready_everywhere(service: str, platform: Platform) -> bool:
    pods = [p.name for p in await platform.list_pods(service) if p.ready]
    return bool(pods) and all(_ready_everywhere(service, pod) for pod in pods)


async def _restart_one(op: Operation, actor: Actor, platform: Platform, pod: str) -> None:
    service = op.service
    await _note(op, step=Operation.Step.DRAINING)
    _check(op)
    await sync_to_async(actions.drain)(actor, service, pod, timeout_s=DRAIN_TIMEOUT_S)
    try:
        drained = lambda: _drained_everywhere(service, pod)  # noqa: E731
        await _wait(drained, DRAIN_TIMEOUT_S + 5, "drained", op)
        await _note(op, step=Operation.Step.DRAINED)
        before = {p.name for p in await platform.list_pods(service)}
        _check(op)
        await _note(op, step=Operation.Step.RESTARTING)
        await platform.restart_pod(pod)
    except BaseException:
        # Not restarted: give the pod its traffic back rather than leave it drained.
        undone = await sync_to_async(undo_drain)(_stop_actor(op, actor), service, pod)
        if (handle := _handles.get(op.pk)) is not None:
            handle.undone = undone
        raise
    await sync_to_async(end_replaced_override)(op, pod)
    new = ""

    async def new_pod_ready() -> bool:
        nonlocal new
        pods = await platform.list_pods(service)
        fresh = [p for p in pods if p.name not in before]
        new = fresh[0].name if fresh else ""
        return bool(fresh) and fresh[0].ready and _ready_everywhere(service, new)

    await _note(op, step=Operation.Step.WAITING_READY)
    await _wait(new_pod_ready, READY_TIMEOUT_S, f"the replacement of {pod} to be ready", op)
    await _note(op, new_pod=new)


def end_replaced_override(op: Operation, pod: str) -> None:
    """Ends the override of a pod the operation replaced, audited: an operator's weight on
    it does not carry over to the new pod (a new pod starts at the configured weight)."""
    with transaction.atomic():
        override = (
            EndpointOverride.objects.select_for_update()
            .filter(service=op.service, endpoint_id=pod)
            .first()
        )
        if override is None:
            return
        kept = {"weight": override.weight, "drained": override.drained}
        override.delete()
        AuditEvent.objects.create(
            actor="ballast", source=AuditEvent.Source.SYSTEM, action="pod_gone",
            service=op.service, target=pod, before=kept, after=None,
            result=AuditEvent.Result.OK,
            detail=f"pod gone: replaced by the {op.kind.replace('_', ' ')}; its override ended",
        )  # fmt: skip


async def _wait(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str, op: Operation
) -> None:
    """Polls `condition` every `POLL_S`; raises OperationFailed after `timeout_s`, and
    Stopped as soon as the operation is asked to stop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        _check(op)
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
    # Only what the steps own: a whole-row save would undo a cancel request or a beat.
    fields = {"step": step, "detail": detail, "new_pod": new_pod, "finished_at": finished or None}
    await op.asave(update_fields=[f for f, v in fields.items() if v is not None] + ["updated_at"])


async def _audit_end(op: Operation, actor: Actor, result: str, detail: str) -> None:
    await AuditEvent.objects.acreate(
        actor=actor.name, source=actor.source, token=actor.token, action=op.kind,
        service=op.service, target=op.target, before=None,
        after={"operation": op.pk, "step": op.step, "new_pod": op.new_pod or None},
        result=result, detail=detail or "finished",
    )  # fmt: skip


# ---- undoing a drain, stopping, cancelling -----------------------------------------------


def undo_drain(actor: Actor, service: str, pod: str) -> str:
    """Gives `pod` its traffic back after an operation that drained it stopped before
    the restart; says what it did ("pod X undrained"), for the operation's detail. When
    no balancer routes to the pod any more, its drain is only dropped from the desired
    state. Never raises for a refusal: the operation's end must still be recorded."""
    try:
        outcome = actions.undrain(actor, service, pod, force=True)
    except NotFound:
        _drop_drain(actor, service, pod)
        return f"pod {pod} undrained (no balancer routes to it now)"
    except actions.ActionError as err:
        log.warning("could not undrain %s/%s: %s", service, pod, err)
        return f"pod {pod} could not be undrained: {err}"
    pending = [r["replica"] for r in outcome.replicas if r["pending"]]
    later = f" (pending on {', '.join(pending)}: down)" if pending else ""
    return f"pod {pod} undrained{later}"


def _drop_drain(actor: Actor, service: str, pod: str) -> None:
    """Takes the drain off the desired state of a pod no balancer reports (gone, or not
    seen yet), audited: nothing to push, and a pod of that name must not start drained."""
    with transaction.atomic():
        EndpointOverride.objects.filter(service=service, endpoint_id=pod, weight=None).delete()
        EndpointOverride.objects.filter(service=service, endpoint_id=pod).update(
            drained=False, drain_timeout_s=None
        )
        AuditEvent.objects.create(
            actor=actor.name, source=actor.source, token=actor.token, action="undrain",
            service=service, target=pod, before={"drained": True}, after=None,
            result=AuditEvent.Result.OK,
            detail="no balancer routes to the pod: its drain is dropped from the desired state",
        )  # fmt: skip


async def stop_owned(why: str = SHUTDOWN, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stops every operation this process runs, before what they need (the collector,
    the replicas) goes: each stops at its next check, undoes its drain and ends failed,
    saying `why` and the step. What has not stopped after `timeout_s` is cancelled."""
    handles = list(_handles.values())
    for handle in handles:
        handle.stop = handle.stop or StopRequest(why, Operation.Step.FAILED, SYSTEM)
    tasks = [h.task for h in handles if h.task is not None]
    if not tasks:
        return
    log.warning("stopping %d running operation(s): %s", len(tasks), why)
    _, late = await asyncio.wait(tasks, timeout=timeout_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


def _cancel_request(operation_id: int) -> StopRequest:
    """The stop an operator asked for, with who asked (from the cancel's audit event)."""
    event = (
        AuditEvent.objects.filter(action="cancel", after__operation=operation_id)
        .order_by("-id")
        .first()
    )
    if event is None:
        return StopRequest("cancelled", Operation.Step.CANCELLED, SYSTEM)
    actor = Actor(event.actor, source=event.source, token=event.token)
    return StopRequest(f"cancelled by {actor.name}", Operation.Step.CANCELLED, actor)


def request_cancel(actor: Actor, operation_id: int) -> Operation:
    """Asks a running operation to stop (from the API's worker thread) and returns it.

    Its owner stops it at its next check (at once when that is this process, within
    `HEARTBEAT_S` otherwise); an orphaned one (its owner gone) is finished here.
    NotFound for an unknown operation, Conflict for a finished one.
    """
    from dashboard.control import orphans  # it uses this module's undo_drain

    with transaction.atomic():
        op: Operation | None = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None:
            raise NotFound(f"no operation {operation_id}: list them at /api/v1/operations/")
        if not op.running:
            raise Conflict(f"operation {operation_id} has already finished ({op.step})")
        op.cancel_requested = True
        op.save(update_fields=["cancel_requested", "updated_at"])
        AuditEvent.objects.create(
            actor=actor.name, source=actor.source, token=actor.token, action="cancel",
            service=op.service, target=op.target, before={"step": op.step},
            after={"operation": op.pk}, result=AuditEvent.Result.OK,
            detail=f"asked the {op.kind.replace('_', ' ')} to stop",
        )  # fmt: skip
    me = runtime.current()
    if op.owner == me.owner and me.loop is not None:
        stop = StopRequest(f"cancelled by {actor.name}", Operation.Step.CANCELLED, actor)
        me.loop.call_soon_threadsafe(_ask_to_stop, op.pk, stop)
    elif orphans.is_orphaned(op, me.owner) and orphans.take_over(op, me.owner):
        orphans.finish(op, actor, Operation.Step.CANCELLED, f"cancelled by {actor.name}")
    op.refresh_from_db()
    return op


def runs_here(operation_id: int) -> bool:
    """Whether this process runs the operation's steps now (read from any thread: a
    dict lookup)."""
    return operation_id in _handles


def _ask_to_stop(operation_id: int, stop: StopRequest) -> None:
    handle = _handles.get(operation_id)
    if handle is not None and handle.stop is None:
        handle.stop = stop
