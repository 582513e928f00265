"""Who may do what over the REST API: every endpoint for anonymous callers, viewers and
operators, by session and by token, against a running dashboard and balancer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from dashboard.control.models import Operation
from tests.control.conftest import (
    ANONYMOUS,
    OPERATOR_SESSION,
    OPERATOR_TOKEN,
    SERVICE,
    VIEWER_SESSION,
    VIEWER_TOKEN,
    Api,
)

pytestmark = pytest.mark.django_db(transaction=True)

POD = f"/api/v1/services/{SERVICE}/pods/pod-a/"
READS = [
    "/api/v1/services/",
    f"/api/v1/services/{SERVICE}/",
    f"/api/v1/services/{SERVICE}/pods/",
    POD,
    f"/api/v1/services/{SERVICE}/stats/?window_s=60",
    "/api/v1/replicas/",
    "/api/v1/audit/",
    "/api/v1/operations/",
    "/api/v1/operations/{operation}/",
    "/api/schema/",
]
# (method, path, body, the action audited, its target, an operator's status). Restarts
# need a platform, which this dashboard has not: 503 for operators too.
ACTS = [
    ("POST", POD + "weight", {"weight": 100}, "set_weight", "pod-a", 200),
    ("POST", POD + "drain", {"timeout_s": 5}, "drain", "pod-a", 200),
    ("POST", POD + "undrain", None, "undrain", "pod-a", 200),
    ("DELETE", POD + "override", None, "clear", "pod-a", 200),
    ("POST", POD + "restart", None, "restart", "pod-a", 503),
    ("POST", f"/api/v1/services/{SERVICE}/rollout-restart", None, "rollout_restart", SERVICE, 503),
    ("PUT", f"/api/v1/services/{SERVICE}/policy", {"policy": "random"}, "set_policy", SERVICE, 200),
    ("DELETE", f"/api/v1/services/{SERVICE}/policy", None, "clear_policy", SERVICE, 200),
]


@sync_to_async
def _finished_operation() -> int:
    op = Operation.objects.create(
        kind=Operation.Kind.RESTART, service=SERVICE, target="pod-a", actor="operator",
        step=Operation.Step.DONE,
    )  # fmt: skip
    return int(op.pk)


async def test_it_answers_anonymous_callers_401_with_the_token_scheme(api: Api) -> None:
    operation = await _finished_operation()
    for path in READS:
        reply = await api.call("GET", path.format(operation=operation), who=ANONYMOUS)
        assert reply.status == 401, path
        assert reply.headers["WWW-Authenticate"] == "Token"
        assert reply.body == {"detail": "Authentication credentials were not provided."}
    for method, path, body, *_ in ACTS:
        reply = await api.call(method, path, body, who=ANONYMOUS)
        assert reply.status == 401, path
    audit = await api.call("GET", "/api/v1/audit/")
    assert audit.body["count"] == 0


@pytest.mark.parametrize("who", [VIEWER_SESSION, VIEWER_TOKEN, OPERATOR_SESSION, OPERATOR_TOKEN])
async def test_it_lets_every_logged_in_user_read(api: Api, who: str) -> None:
    operation = await _finished_operation()
    for path in READS:
        reply = await api.call("GET", path.format(operation=operation), who=who)
        assert reply.status == 200, (path, reply.body)


@pytest.mark.parametrize("who", [VIEWER_SESSION, VIEWER_TOKEN])
async def test_it_refuses_a_viewer_every_act_and_audits_the_attempt(api: Api, who: str) -> None:
    weight_before = api.endpoint("pod-a").weight
    for method, path, body, action, target, _ in ACTS:
        reply = await api.call(method, path, body, who=who)
        assert reply.status == 403, path
        assert "operator role" in reply.body["detail"]
        audit = await api.call("GET", f"/api/v1/audit/?action={action}&result=denied")
        [event] = audit.body["results"]
        assert (event["actor"], event["service"], event["target"]) == ("viewer", SERVICE, target)
        assert event["source"] == ("api" if who == VIEWER_TOKEN else "ui")
    assert api.endpoint("pod-a").weight == weight_before
    assert api.endpoint("pod-a").state.value == "READY"


@pytest.mark.parametrize("who", [OPERATOR_SESSION, OPERATOR_TOKEN])
async def test_it_lets_an_operator_act_and_audits_who_did(api: Api, who: str) -> None:
    for method, path, body, action, target, status in ACTS:
        reply = await api.call(method, path, body, who=who)
        assert reply.status == status, (path, reply.body)
        if status == 200:
            assert reply.body["result"] == "ok"
            audit = await api.call("GET", f"/api/v1/audit/?action={action}")
            event = audit.body["results"][0]
            assert event["id"] == reply.body["audit_id"]
            assert (event["actor"], event["target"], event["result"]) == ("operator", target, "ok")
            assert event["source"] == ("api" if who == OPERATOR_TOKEN else "ui")
            assert bool(event["token"]) == (who == OPERATOR_TOKEN)


async def test_a_session_post_without_its_csrf_token_is_refused(api: Api) -> None:
    session = api.credentials.headers[OPERATOR_SESSION]
    reply = await api.call(
        "POST",
        POD + "weight",
        {"weight": 300},
        who=ANONYMOUS,
        headers={"Cookie": session["Cookie"]},
    )
    assert reply.status == 403
    assert "CSRF" in reply.body["detail"]
    assert api.endpoint("pod-a").weight == 100


async def test_a_method_an_endpoint_lacks_is_405_not_a_denied_act(api: Api) -> None:
    reply = await api.call("POST", "/api/v1/services/", {}, who=VIEWER_TOKEN)
    assert reply.status == 405
    audit = await api.call("GET", "/api/v1/audit/")
    assert audit.body["count"] == 0
