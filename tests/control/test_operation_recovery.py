"""Operations whose dashboard process is gone, and cancelling operations over the API:
a running dashboard with its control plane over a real balancer and three pods, an
operation left behind by another (dead) dashboard process as its row and its drain."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from dashboard.app import assets
from dashboard.control import actions, orphans, runtime
from dashboard.control.actions import Actor
from dashboard.control.models import AuditEvent, EndpointOverride, Operation
from dashboard.control.roles import OPERATOR, VIEWER
from tests.control.conftest import OPERATOR_SESSION, SERVICE, VIEWER_TOKEN, Api, Credentials
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ALICE = Actor("alice")


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@sync_to_async
def _left_behind(
    owner: str,
    *,
    pod: str = "pod-a",
    step: str = Operation.Step.DRAINING,
    beat_age_s: float = 0.0,
    kind: str = Operation.Kind.RESTART,
    detail: str = "",
) -> int:
    """What a dashboard process that died mid restart leaves: the pod drained (pushed to
    the balancer) and the running operation, owned by `owner`."""
    actions.drain(ALICE, SERVICE, pod, timeout_s=30)
    op = Operation.objects.create(
        kind=kind, service=SERVICE, target=pod if kind == Operation.Kind.RESTART else SERVICE,
        actor="alice", step=step, owner=owner, detail=detail,
        heartbeat_at=timezone.now() - timedelta(seconds=beat_age_s),
    )  # fmt: skip
    return int(op.pk)


def _step(operation_id: int) -> str:
    return str(Operation.objects.get(pk=operation_id).step)


async def _finished(operation_id: int, timeout_s: float = 30.0) -> Operation:
    """Polls the row until the operation has finished (wait_for takes no coroutine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (op := await Operation.objects.aget(pk=operation_id)).running:
        if loop.time() > deadline:
            raise AssertionError(f"operation {operation_id} did not finish: {op.step}")
        await asyncio.sleep(0.1)
    return op


async def test_it_finishes_an_operation_whose_process_died_and_undrains_its_pod(
    api: Api,
) -> None:
    dead = f"{socket.gethostname()}:{_dead_pid()}:0badf00d"
    operation = await _left_behind(dead)
    await wait_for(lambda: api.endpoint("pod-a").state.value == "DRAINED", 10, "pod-a drained")

    op = await _finished(operation)

    assert op.step == "failed"
    assert op.detail == (
        "orphaned: the dashboard process running it stopped during step draining;"
        " pod pod-a undrained"
    )
    assert api.endpoint("pod-a").state.value == "READY"
    assert not await EndpointOverride.objects.filter(endpoint_id="pod-a").aexists()
    end = await AuditEvent.objects.filter(action="restart").alatest("id")
    assert (end.actor, end.source, end.result) == ("ballast", "system", "failed")
    assert end.detail == op.detail
    undrain = await AuditEvent.objects.filter(action="undrain").alatest("id")
    assert (undrain.actor, undrain.source, undrain.target) == ("ballast", "system", "pod-a")


async def test_it_takes_over_an_operation_whose_heartbeat_stopped_on_another_host(
    api: Api,
) -> None:
    elsewhere = "another-host:4242:cafe1234"
    operation = await _left_behind(
        elsewhere, pod="pod-b", kind=Operation.Kind.ROLLOUT_RESTART,
        step=Operation.Step.DRAINED, detail="pod 2 of 3: pod-b",
        beat_age_s=orphans.STALE_S + 5,
    )  # fmt: skip

    op = await _finished(operation)

    assert op.detail == (
        "orphaned: the dashboard process running it stopped during step drained;"
        " pod pod-b undrained"
    )
    assert api.endpoint("pod-b").state.value == "READY"


async def test_it_leaves_an_operation_alone_while_its_owner_beats(api: Api) -> None:
    alive_elsewhere = "another-host:4242:cafe1234"
    here_alive = f"{socket.gethostname()}:{os.getppid()}:cafe1234"
    first = await _left_behind(alive_elsewhere, beat_age_s=1)
    second = await _left_behind(here_alive, pod="pod-b", beat_age_s=1)
    me = runtime.current().owner

    assert await sync_to_async(orphans.recover)(me) == []
    assert await sync_to_async(_step)(first) == "draining"
    assert await sync_to_async(_step)(second) == "draining"


async def test_it_cancels_an_orphaned_operation_at_once(api: Api) -> None:
    operation = await _left_behind("another-host:4242:cafe1234", beat_age_s=60)
    sweeper = api.plane.sweeper
    assert sweeper is not None
    await sweeper.stop()  # the cancel, not the sweeper, must finish it
    last = (await AuditEvent.objects.alatest("id")).pk

    reply = await api.call("POST", f"/api/v1/operations/{operation}/cancel", who=OPERATOR_SESSION)

    assert reply.status == 202, reply.body
    assert reply.body["step"] == "cancelled" and not reply.body["running"]
    assert reply.body["detail"] == "cancelled by operator during step draining; pod pod-a undrained"
    assert api.endpoint("pod-a").state.value == "READY"
    events = [
        (e.action, e.actor, e.source, e.result)
        async for e in AuditEvent.objects.filter(id__gt=last).order_by("id")
    ]
    assert events == [
        ("cancel", "operator", "ui", "ok"),
        ("undrain", "operator", "ui", "ok"),
        ("restart", "operator", "ui", "failed"),
    ]


async def test_it_answers_a_cancel_of_an_unknown_or_finished_operation(api: Api) -> None:
    operation = await _left_behind("another-host:4242:cafe1234", beat_age_s=60)
    await _finished(operation)

    unknown = await api.call("POST", "/api/v1/operations/999999/cancel")
    finished = await api.call("POST", f"/api/v1/operations/{operation}/cancel")

    assert unknown.status == 404
    assert unknown.body == {"detail": "no operation 999999: list them at /api/v1/operations/"}
    assert finished.status == 409
    assert finished.body == {"detail": f"operation {operation} has already finished (failed)"}


async def test_it_refuses_a_viewer_s_cancel_and_audits_it(api: Api) -> None:
    operation = await _left_behind("another-host:4242:cafe1234", beat_age_s=1)

    reply = await api.call("POST", f"/api/v1/operations/{operation}/cancel", who=VIEWER_TOKEN)

    assert reply.status == 403
    assert await sync_to_async(_step)(operation) == "draining"
    denied = await AuditEvent.objects.filter(result="denied").alatest("id")
    assert (denied.actor, denied.action, denied.source) == ("viewer", "cancel", "api")


async def test_it_documents_the_cancel_in_the_schema(api: Api) -> None:
    reply = await api.call("GET", "/api/schema/")

    cancel = reply.body["paths"]["/api/v1/operations/{id}/cancel"]["post"]
    assert {"202", "404", "409"} <= set(cancel["responses"])
    assert "running restart or rollout" in cancel["description"]


def _service_page(user: User) -> str:
    client = Client()
    client.force_login(user)
    with override_settings(BALLAST_SERVICES=[SERVICE]):
        response = client.get(f"/services/{SERVICE}/")
    assert response.status_code == 200
    return str(response.content.decode())


def test_the_service_page_offers_operators_a_cancel_beside_the_operation(
    credentials: Credentials,
) -> None:
    operator = _service_page(credentials.users[OPERATOR])
    viewer = _service_page(credentials.users[VIEWER])
    script = (Path(assets.__file__).parent / "static/ballast/controls.js").read_text()

    assert re.search(
        r'<span id="operation"[^>]*></span>\s*<button[^>]*id="operation-cancel"', operator
    )
    assert 'id="operation-cancel"' not in viewer
    # It posts to the operation's cancel URL and shows only while the operation runs.
    assert 'page.operations_api + op.id + "/cancel"' in script
    assert "cancel.hidden = !operationRunning()" in script


async def test_it_finishes_one_of_its_own_whose_task_is_gone(api: Api) -> None:
    assert api.plane.sweeper is not None
    await api.plane.sweeper.stop()  # recovered below, not by the sweeper meanwhile
    me = runtime.current().owner
    lost = await _left_behind(me, beat_age_s=orphans.STALE_S + 5)
    fresh = await _left_behind(me, pod="pod-b", beat_age_s=1)

    assert await sync_to_async(orphans.recover)(me) == [lost]
    assert await sync_to_async(_step)(fresh) == "draining"
