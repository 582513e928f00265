"""The service page's automation card: its switches, the auto-weights table, the script that
drives them (served, under the page's login) and the API URLs it is given."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def page_config(html: str) -> dict[str, object]:
    found = re.search(r'id="ballast-service" type="application/json">(.*?)</script>', html)
    assert found is not None
    config: dict[str, object] = json.loads(found[1])
    return config


def test_it_shows_the_automation_card_with_its_switches(operator_client: Client) -> None:
    html = operator_client.get("/services/inventory/").content.decode()
    for element in ('id="automation"', 'id="auto-weights"', 'id="oom-guard"',
                    'id="automation-pause"', 'id="auto-weights-table"'):  # fmt: skip
        assert element in html
    assert "<th>Why</th>" in html


def test_it_gives_the_script_the_automation_api(operator_client: Client) -> None:
    config = page_config(operator_client.get("/services/inventory/").content.decode())
    assert config["automation_api"] == "/api/v1/services/inventory/automation"
    assert config["pause_api"] == "/api/v1/automation/"


def test_it_serves_the_automation_script_and_stylesheet(operator_client: Client) -> None:
    html = operator_client.get("/services/inventory/").content.decode()
    script = re.search(r'<script src="([^"]+/automation\.js)"', html)
    style = re.search(r'<link rel="stylesheet" href="([^"]+/automation\.css)"', html)
    assert script is not None and style is not None
    served = operator_client.get(script[1])
    assert served.status_code == 200
    assert b"automation_api" in served.content
    assert operator_client.get(style[1]).status_code == 200
