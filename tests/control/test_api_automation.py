"""The automation API against a running dashboard and balancer: per service autoweights and
oom_guard on and off, the global pause, who may switch them, clear errors, the audit
rows; and what the switches do to the weights the balancer holds (auto weights desired
only while on and not paused; an operator's weight wins; off or paused: the defaults)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from dashboard.control import automation
from dashboard.control.autoweights import Decision
from dashboard.control.models import AuditEvent, AutoWeight, ServiceAutomation
from tests.control.conftest import (
    ANONYMOUS,
    OPERATOR_SESSION,
    SERVICE,
    VIEWER_SESSION,
    VIEWER_TOKEN,
    Api,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SWITCHES = f"/api/v1/services/{SERVICE}/automation"
PAUSE = "/api/v1/automation/"


@sync_to_async
def audit_rows(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


@sync_to_async
def auto_weights() -> dict[str, int]:
    return dict(AutoWeight.objects.filter(service=SERVICE).values_list("endpoint_id", "weight"))


@sync_to_async
def give(weights: dict[str, int]) -> int:
    """What the controller does with its decisions (each audited as the system)."""
    decisions = [
        Decision(pod, w, f"pod {pod}: 0.50 cores at 100 rps → weight {w} (was 100)", True, None)
        for pod, w in weights.items()
    ]
    return automation.save_decisions(SERVICE, decisions, ["pod-a", "pod-b", "pod-c"])


def weight_of(api: Api, pod: str) -> int:
    return int(api.endpoint(pod).weight)


async def test_it_turns_autoweights_on_and_off_audited_with_the_operator(api: Api) -> None:
    off = await api.call("GET", SWITCHES, who=VIEWER_TOKEN)
    assert off.status == 200
    assert off.body["autoweights"] is False and off.body["oom_guard"] is False
    assert off.body["paused"] is False and off.body["auto_weights"] == []

    on = await api.call("PATCH", SWITCHES, {"autoweights": True}, who=OPERATOR_SESSION)
    assert on.status == 200, on.body
    assert on.body["autoweights"] is True and on.body["oom_guard"] is False
    assert on.body["updated_by"] == "operator"

    guard = await api.call("PATCH", SWITCHES, {"oom_guard": True})
    assert guard.body["autoweights"] is True and guard.body["oom_guard"] is True

    rows = await audit_rows(automation.SET_AUTOMATION)
    assert [(r.actor, r.source, r.target, r.result) for r in rows] == [
        ("operator", "ui", SERVICE, "ok"), ("operator", "api", SERVICE, "ok"),
    ]  # fmt: skip
    assert rows[0].before == {"autoweights": False, "oom_guard": False}
    assert rows[0].after == {"autoweights": True, "oom_guard": False}
    assert rows[1].after == {"autoweights": True, "oom_guard": True}


async def test_a_viewer_reads_the_switches_but_may_not_turn_them(api: Api) -> None:
    for who in (VIEWER_SESSION, VIEWER_TOKEN):
        reply = await api.call("PATCH", SWITCHES, {"autoweights": True}, who=who)
        assert reply.status == 403
        assert reply.body["detail"] == "acting needs the operator role; this account may only read"
        paused = await api.call("PUT", PAUSE, {"paused": True}, who=who)
        assert paused.status == 403
    assert not await sync_to_async(ServiceAutomation.objects.exists)()
    denied = await sync_to_async(list)(AuditEvent.objects.filter(result="denied"))
    assert {(d.actor, d.action) for d in denied} == {
        ("viewer", automation.SET_AUTOMATION), ("viewer", automation.PAUSE),
    }  # fmt: skip
    for path in (SWITCHES, PAUSE):
        anonymous = await api.call("GET", path, who=ANONYMOUS)
        assert anonymous.status == 401


async def test_an_unknown_service_is_404_naming_the_services(api: Api) -> None:
    for method, body in (("GET", None), ("PATCH", {"autoweights": True})):
        reply = await api.call(method, "/api/v1/services/nope/automation", body)
        assert reply.status == 404
        assert reply.body == {"detail": "unknown service 'nope': the services are inventory"}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"autoweights": "true"}, "autoweights: must be true or false"),
        ({"autoweights": 1}, "autoweights: must be true or false"),
        ({"autoweight": True}, "unknown field(s) autoweight: send autoweights, oom_guard"),
        ({}, 'send one or more of autoweights, oom_guard as true or false, e.g.'
             ' {"autoweights": true}'),
    ],
)  # fmt: skip
async def test_a_bad_switch_body_is_400_in_one_line(api: Api, body: Any, detail: str) -> None:
    reply = await api.call("PATCH", SWITCHES, body)
    assert reply.status == 400
    assert reply.body == {"detail": detail}


async def test_the_pause_is_one_switch_audited_with_the_operator(api: Api) -> None:
    assert (await api.call("GET", PAUSE, who=VIEWER_TOKEN)).body["paused"] is False
    paused = await api.call("PUT", PAUSE, {"paused": True}, who=OPERATOR_SESSION)
    assert paused.status == 200 and paused.body["paused"] is True
    assert paused.body["updated_by"] == "operator"
    assert (await api.call("GET", SWITCHES)).body["paused"] is True
    resumed = await api.call("PUT", PAUSE, {"paused": False})
    assert resumed.body["paused"] is False
    bad = await api.call("PUT", PAUSE, {"paused": "yes"})
    assert bad.status == 400 and bad.body == {"detail": "paused: must be true or false"}
    rows = await audit_rows(automation.PAUSE) + await audit_rows(automation.RESUME)
    assert [(r.actor, r.action, r.after) for r in rows] == [
        ("operator", automation.PAUSE, {"paused": True}),
        ("operator", automation.RESUME, {"paused": False}),
    ]


async def test_auto_weights_reach_the_balancer_and_off_restores_the_defaults(api: Api) -> None:
    await api.call("PATCH", SWITCHES, {"autoweights": True})
    assert await give({"pod-a": 60, "pod-b": 120}) == 2
    await wait_for(lambda: weight_of(api, "pod-a") == 60 and weight_of(api, "pod-b") == 120,
                   timeout_s=20, what="the auto weights on the balancer")  # fmt: skip
    shown = await api.call("GET", SWITCHES, who=VIEWER_TOKEN)
    assert {w["pod"]: w["weight"] for w in shown.body["auto_weights"]} == {
        "pod-a": 60, "pod-b": 120,
    }  # fmt: skip
    assert "0.50 cores at 100 rps → weight 60" in shown.body["auto_weights"][0]["reason"]
    given = await audit_rows(automation.AUTO_WEIGHT)
    assert {(r.actor, r.source, r.target, r.after["weight"]) for r in given} == {
        ("ballast", "system", "pod-a", 60), ("ballast", "system", "pod-b", 120),
    }  # fmt: skip

    off = await api.call("PATCH", SWITCHES, {"autoweights": False})
    assert off.body["auto_weights"] == []
    await wait_for(lambda: weight_of(api, "pod-a") == 100 and weight_of(api, "pod-b") == 100,
                   timeout_s=20, what="the defaults back")  # fmt: skip
    row = (await audit_rows(automation.SET_AUTOMATION))[-1]
    assert row.detail == "2 auto weight(s) dropped: those pods go back to their defaults"


async def test_pausing_returns_the_pods_to_their_defaults_and_stops_the_controller(
    api: Api,
) -> None:
    await api.call("PATCH", SWITCHES, {"autoweights": True})
    await give({"pod-c": 50})
    await wait_for(lambda: weight_of(api, "pod-c") == 50, timeout_s=20, what="auto weight 50")
    await api.call("PUT", PAUSE, {"paused": True})
    await wait_for(lambda: weight_of(api, "pod-c") == 100, timeout_s=20, what="default again")
    assert await auto_weights() == {}
    # Paused: neither the controller's pass nor a late write gives anything.
    assert await api.plane.autoweigher.run_once() == 0
    assert await give({"pod-c": 50}) == 0
    assert await auto_weights() == {}


async def test_an_operator_weight_wins_over_the_auto_weight(api: Api) -> None:
    await api.call("PATCH", SWITCHES, {"autoweights": True})
    await give({"pod-a": 70})
    await wait_for(lambda: weight_of(api, "pod-a") == 70, timeout_s=20, what="auto weight 70")
    reply = await api.call("POST", f"/api/v1/services/{SERVICE}/pods/pod-a/weight", {"weight": 300})
    assert reply.status == 200
    await wait_for(lambda: weight_of(api, "pod-a") == 300, timeout_s=20, what="override 300")
    # Held there: the reconciler does not bring the auto weight back over it.
    for _ in range(3):
        await api.plane.reconciler.reconcile_once()
    assert weight_of(api, "pod-a") == 300
    cleared = await api.call("DELETE", f"/api/v1/services/{SERVICE}/pods/pod-a/override")
    assert cleared.status == 200
    # The clear itself sends the auto weight (not the default, for the reconciler to fix).
    assert weight_of(api, "pod-a") == 70


async def test_the_controller_leaves_pods_with_an_operator_weight_alone(api: Api) -> None:
    await api.call("PATCH", SWITCHES, {"autoweights": True})
    await api.call("POST", f"/api/v1/services/{SERVICE}/pods/pod-b/weight", {"weight": 300})
    inputs = await sync_to_async(automation.controller_inputs)()
    assert inputs[SERVICE].overridden == frozenset({"pod-b"})


async def test_auto_weights_of_pods_gone_are_forgotten(api: Api) -> None:
    await api.call("PATCH", SWITCHES, {"autoweights": True})
    await give({"pod-a": 70, "pod-b": 80})
    await sync_to_async(automation.save_decisions)(SERVICE, [], ["pod-b", "pod-c"])
    assert await auto_weights() == {"pod-b": 80}
