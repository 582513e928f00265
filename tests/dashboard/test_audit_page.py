"""The audit page (newest first, filtered, 50 a page, with the operations) and the service
page's `can_act`: operators get the buttons, viewers do not."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from dashboard.app.views import change_text
from dashboard.control.models import AuditEvent, Operation

pytestmark = pytest.mark.django_db


def event(n: int, **fields: object) -> AuditEvent:
    """Audit event number `n`, `n` minutes after a fixed start (`at` is auto_now_add)."""
    values: dict[str, object] = {
        "actor": "alice", "source": "ui", "action": "set_weight", "service": "inventory",
        "target": f"inventory-{n}", "before": {"weight": 100}, "after": {"weight": 300},
        "result": "ok", "detail": f"event {n}",
    }  # fmt: skip
    values.update(fields)
    created: AuditEvent = AuditEvent.objects.create(**values)
    at = timezone.now() - timedelta(days=1) + timedelta(minutes=n)
    AuditEvent.objects.filter(pk=created.pk).update(at=at)
    return created


def details(client: Client, query: str = "") -> list[str]:
    """The detail column of the audit table, top to bottom."""
    html = client.get("/audit/" + query).content.decode()
    table = html.split('id="audit"', 1)[1] if 'id="audit"' in html else ""
    return re.findall(r'<td class="detail">(.*?)</td>', table, re.S)


def user_in(group: str | None, name: str) -> User:
    user = User.objects.create_user(name, password="pw")
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def page_config(client: Client) -> dict[str, object]:
    html = client.get("/services/inventory/").content.decode()
    found = re.search(r'id="ballast-service" type="application/json">(.*?)</script>', html)
    assert found is not None
    config: dict[str, object] = json.loads(found.group(1))
    return config


def test_it_sends_anonymous_visitors_to_the_login_page(client: Client) -> None:
    response = client.get("/audit/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/audit/"


def test_it_lists_the_events_newest_first(operator_client: Client) -> None:
    for n in (2, 3, 1):
        event(n)
    assert details(operator_client) == ["event 3", "event 2", "event 1"]


def test_it_shows_each_events_fields_and_its_change_compactly(operator_client: Client) -> None:
    event(1, actor="bob", source="api", token="ab12cd34", result="pending", detail="b1: down")
    html = operator_client.get("/audit/").content.decode()
    assert "bob" in html and "token ab12cd34" in html
    assert '<td class="result result-pending">pending</td>' in html
    assert "weight 100 → 300" in html
    assert "<code>inventory-1</code>" in html


def test_it_words_what_changed() -> None:
    assert change_text({"weight": 100, "drained": False}, {"weight": 100, "drained": True}) == (
        "drained no → yes"
    )
    assert change_text(None, {"weight": 300, "drained": False}) == "— → weight 300"
    assert change_text(None, {"operation": 7}) == "— → operation 7"
    assert change_text({"weight": 300, "drained": False}, None) == "weight 300 → cleared"
    assert change_text(None, None) == ""


def test_it_filters_by_each_field(operator_client: Client) -> None:
    event(1, service="payments", target="payments-1")
    event(2, actor="bob")
    event(3, action="drain")
    event(4, result="denied")
    event(5)
    assert details(operator_client, "?service=payments") == ["event 1"]
    assert details(operator_client, "?target=payments-1") == ["event 1"]
    assert details(operator_client, "?actor=bob") == ["event 2"]
    assert details(operator_client, "?action=drain") == ["event 3"]
    assert details(operator_client, "?result=denied") == ["event 4"]
    assert details(operator_client, "?service=inventory&actor=alice&result=ok") == [
        "event 5",
        "event 3",
    ]
    assert details(operator_client, "?actor=nobody") == []


def test_it_pages_50_events_at_a_time_keeping_the_filters(operator_client: Client) -> None:
    for n in range(1, 56):
        event(n, actor="bob" if n % 2 else "alice")
    event(60, actor="carol")
    first = details(operator_client)
    assert len(first) == 50 and first[0] == "event 60"
    assert details(operator_client, "?page=2") == [f"event {n}" for n in range(6, 0, -1)]
    html = operator_client.get("/audit/?actor=bob").content.decode()
    assert "page 1 of 1" in html
    assert details(operator_client, "?actor=bob&page=2") == details(operator_client, "?actor=bob")
    html = operator_client.get("/audit/?service=inventory").content.decode()
    assert 'href="?service=inventory&amp;page=2"' in html


def test_it_escapes_html_in_what_it_shows(operator_client: Client) -> None:
    event(1, detail="<script>alert(1)</script>", actor="<b>eve</b>")
    html = operator_client.get("/audit/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;eve&lt;/b&gt;" in html


def test_it_shows_running_operations_first(operator_client: Client) -> None:
    done = Operation.objects.create(
        kind="restart", service="inventory", target="inventory-a", actor="alice",
        step="done", new_pod="inventory-b",
    )  # fmt: skip
    running = Operation.objects.create(
        kind="rollout_restart", service="inventory", target="inventory", actor="bob",
        step="waiting_ready",
    )  # fmt: skip
    Operation.objects.filter(pk=running.pk).update(started_at=done.started_at - timedelta(hours=1))
    html = operator_client.get("/audit/").content.decode()
    table = html.split('id="operations"', 1)[1].split("</table>", 1)[0]
    assert table.index("running: Waiting Ready") < table.index("Done")
    assert "<code>inventory-b</code>" in table


def test_it_links_the_audit_page_from_the_header(operator_client: Client) -> None:
    assert 'href="/audit/"' in operator_client.get("/").content.decode()


def test_the_service_page_lets_an_operator_act(client: Client) -> None:
    client.force_login(user_in("operator", "olga"))
    config = page_config(client)
    assert config["can_act"] is True
    assert config["api"] == "/api/v1/services/inventory/"
    assert config["audit_url"] == "/audit/?service=inventory"
    html = client.get("/services/inventory/").content.decode()
    assert 'id="rollout"' in html and 'id="policy"' in html


@pytest.mark.parametrize("group", ["viewer", None])
def test_the_service_page_gives_a_viewer_no_buttons(client: Client, group: str | None) -> None:
    client.force_login(user_in(group, "vera"))
    assert page_config(client)["can_act"] is False
    html = client.get("/services/inventory/").content.decode()
    assert 'id="rollout"' not in html and 'id="policy"' not in html
    assert 'id="policy-label"' in html
