"""Hostile and odd input to the REST API against a running dashboard: refused attempts
audited with checked, bounded names at a bounded rate; bodies that are JSON or nothing;
durations as strict as weights; and no input that makes a 500."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from dashboard.control.api.denials import DENIALS_PER_WINDOW, SUPPRESSED_ACTION
from dashboard.control.api.serializers import MAX_EXPIRES_IN_S
from dashboard.control.models import AuditEvent
from tests.control.conftest import (
    OPERATOR_TOKEN,
    SERVICE,
    VIEWER_SESSION,
    VIEWER_TOKEN,
    Api,
    Reply,
)

pytestmark = pytest.mark.django_db(transaction=True)

POD = f"/api/v1/services/{SERVICE}/pods/pod-a/"
LONG_NAME = "a" * 60_000  # lowercase letters: a Kubernetes name but for its length
HAMMER_CALLS = 60
# An answer or an audit row that quotes a name quotes at most this much of it.
BOUNDED_MESSAGE_CHARS = 400


@sync_to_async
def _audit_rows() -> list[AuditEvent]:
    return list(AuditEvent.objects.order_by("id"))


def _text_bytes(rows: list[AuditEvent]) -> int:
    """The bytes of the rows' text columns: what a hostile caller can make us store."""
    columns = ("actor", "action", "service", "target", "detail")
    return sum(len(str(getattr(row, c)).encode()) for row in rows for c in columns)


async def test_it_writes_a_bounded_audit_for_a_viewer_hammering_with_60_kb_names(
    api: Api,
) -> None:
    for i in range(HAMMER_CALLS):
        path = f"/api/v1/services/{SERVICE}/pods/{LONG_NAME}{i}/weight"
        reply = await api.call("POST", path, {"weight": 5}, who=VIEWER_TOKEN)
        assert reply.status == 400, reply.status
        assert len(reply.body["detail"]) < BOUNDED_MESSAGE_CHARS
        assert "is not valid: use the pod's Kubernetes name" in reply.body["detail"]
    rows = await _audit_rows()
    written = _text_bytes(rows)
    print(f"audit after {HAMMER_CALLS} calls with 60 KB pod names: {len(rows)} rows, {written} B")
    # Before: 60 rows and 3,603,650 bytes (60 KB a call).
    assert len(rows) == DENIALS_PER_WINDOW + 1
    assert written < 10_000
    assert all(len(row.target) <= 253 for row in rows)
    assert {row.result for row in rows} == {"denied"}
    assert rows[0].target.endswith("… (60001 characters)")
    summary = rows[-1]
    assert summary.action == SUPPRESSED_ACTION
    assert summary.detail.startswith(
        f"{HAMMER_CALLS - DENIALS_PER_WINDOW} more denied attempts by this actor within 60 s"
    )


async def test_it_audits_a_viewers_repeated_denials_at_a_bounded_rate(api: Api) -> None:
    for _ in range(3 * DENIALS_PER_WINDOW):
        reply = await api.call("POST", POD + "weight", {"weight": 5}, who=VIEWER_SESSION)
        assert reply.status == 403
    denied = await api.call("GET", "/api/v1/audit/?result=denied&action=set_weight")
    assert denied.body["count"] == DENIALS_PER_WINDOW
    [summary] = (await api.call("GET", f"/api/v1/audit/?action={SUPPRESSED_ACTION}")).body[
        "results"
    ]
    assert summary["actor"] == "viewer"
    assert summary["detail"].startswith(f"{2 * DENIALS_PER_WINDOW} more denied attempts")
    # Another actor has a budget of its own.
    reply = await api.call("POST", POD + "drain", {}, who=VIEWER_TOKEN)
    assert reply.status == 403


async def test_it_answers_bad_names_with_a_bounded_message_and_audits_nothing_for_operators(
    api: Api,
) -> None:
    reply = await api.call("POST", f"/api/v1/services/{SERVICE}/pods/{LONG_NAME}/drain", {})
    assert reply.status == 400
    assert reply.body["detail"].endswith(
        "… (60000 characters) is not valid: use the pod's Kubernetes name (lowercase letters,"
        " digits, '-' and '.', at most 253 characters) or its host:port"
    )
    reply = await api.call("PUT", f"/api/v1/services/{LONG_NAME}/policy", {"policy": "random"})
    assert reply.status == 404
    assert len(reply.body["detail"]) < BOUNDED_MESSAGE_CHARS
    assert reply.body["detail"].endswith("(60000 characters): the services are inventory")
    reply = await api.call("GET", f"/api/v1/services/{SERVICE}/pods/Pod_A/")
    assert reply.status == 400
    # An address names a pod too; this one is well formed, just not behind the balancers.
    reply = await api.call("POST", f"/api/v1/services/{SERVICE}/pods/10.0.0.9:50051/undrain")
    assert reply.status == 404
    assert "has no pod '10.0.0.9:50051' behind its balancers" in reply.body["detail"]
    assert await _audit_rows() == []


def _raw(api: Api, method: str, path: str, body: bytes, content_type: str) -> Reply:
    """A request with a body sent as is (json.dumps cannot even write the deep ones)."""
    headers = {**api.credentials.headers[OPERATOR_TOKEN], "Content-Type": content_type}
    request = urllib.request.Request(api.url(path), data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return Reply(status, json.loads(raw), {})


async def test_it_answers_json_nested_100000_deep_400_malformed(api: Api) -> None:
    for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"weight":' + b"[" * 100_000):
        reply = await asyncio.to_thread(_raw, api, "POST", POD + "weight", deep, "application/json")
        assert reply.status == 400
        assert reply.body["detail"].startswith("malformed JSON")
    assert api.endpoint("pod-a").weight == 100


async def test_it_takes_acts_as_json_only_and_says_so(api: Api) -> None:
    form = b"weight=300"
    reply = await asyncio.to_thread(
        _raw, api, "POST", POD + "weight", form, "application/x-www-form-urlencoded"
    )
    assert reply.status == 415
    assert reply.body["detail"].endswith("Send JSON (Content-Type: application/json).")
    assert api.endpoint("pod-a").weight == 100
    schema = (await api.call("GET", "/api/schema/")).body
    bodies = {
        f"{method.upper()} {path}": list(operation["requestBody"]["content"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }
    assert bodies
    assert set(map(tuple, bodies.values())) == {("application/json",)}, bodies


EXPIRES_RANGE = f"expires_in_s: must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_S}"


@pytest.mark.parametrize(
    "expires", ["600", "1e3", 600.0, 1.5, True, 0, -1, MAX_EXPIRES_IN_S + 1, [600], {"s": 1}]
)
async def test_it_takes_expires_in_s_as_strictly_as_a_weight(api: Api, expires: Any) -> None:
    reply = await api.call("POST", POD + "weight", {"weight": 300, "expires_in_s": expires})
    assert (reply.status, reply.body) == (400, {"detail": EXPIRES_RANGE})
    reply = await api.call("PUT", f"/api/v1/services/{SERVICE}/policy", {
        "policy": "random", "expires_in_s": expires,
    })  # fmt: skip
    assert (reply.status, reply.body) == (400, {"detail": EXPIRES_RANGE})
    assert api.endpoint("pod-a").weight == 100


async def test_it_takes_a_whole_number_of_seconds_to_expire(api: Api) -> None:
    reply = await api.call("POST", POD + "weight", {"weight": 300, "expires_in_s": 600})
    assert reply.status == 200
    assert reply.body["state"]["expires_at"] is not None


@pytest.mark.parametrize("timeout_s", [0.0004, 0.0009999, 1e-300, 0, "5", True])
async def test_it_refuses_a_drain_timeout_below_1_ms(api: Api, timeout_s: Any) -> None:
    reply = await api.call("POST", POD + "drain", {"timeout_s": timeout_s})
    assert reply.status == 400
    assert reply.body["detail"].startswith("timeout_s: must be")
    assert "0.001" in reply.body["detail"]
    assert api.endpoint("pod-a").state.value == "READY"


async def test_it_drains_with_a_1_ms_timeout(api: Api) -> None:
    reply = await api.call("POST", POD + "drain", {"timeout_s": 0.001})
    assert reply.status == 200
    assert reply.body["state"]["drain_timeout_s"] == 0.001


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B05:00",
        "until=9999-12-31T23:59:59-05:00",
        "since=0001-01-01T00:00:00%2B23:59&until=9999-12-31T23:59:59-23:59",
    ],
)
async def test_it_answers_audit_dates_beyond_the_calendar_400(api: Api, query: str) -> None:
    reply = await api.call("GET", f"/api/v1/audit/?{query}")
    assert reply.status == 400
    detail = reply.body["detail"]
    assert "is out of range: use a date and time from 0001-01-01 to 9999-12-31 in UTC" in detail


async def test_it_filters_the_audit_up_to_the_calendars_edges(api: Api) -> None:
    await api.call("POST", POD + "weight", {"weight": 300})
    query = "since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999Z"
    reply = await api.call("GET", f"/api/v1/audit/?{query}")
    assert (reply.status, reply.body["count"]) == (200, 1)
