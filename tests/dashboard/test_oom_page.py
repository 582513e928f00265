"""Each pod's predicted time to OOM on the service page (oom.js, run in node) and in the
REST API's pod facts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from django.test import Client

from dashboard.app.history import service_history
from tests.dashboard.test_service_page import empty_history, frame, script_urls

__all__ = ["empty_history"]  # the autouse fixture, shared with the page's tests

pytestmark = pytest.mark.django_db

OOM_JS = Path(__file__).parents[2] / "dashboard" / "app" / "static" / "ballast" / "oom.js"

# The note oom.js leaves on a memory cell for each `oom_s`, in one node run, as the
# page's rows get them frame after frame (the same cell: a note comes and goes).
RUN = """
global.window = {};
require(process.argv[1]);
const td = { dataset: {}, title: "", removeAttribute(name) { this[name] = ""; } };
const seen = [];
for (const oom_s of JSON.parse(process.argv[2])) {
  window.ballastOom.render(td, { oom_s });
  seen.push(td.dataset.oom || null);
}
console.log(JSON.stringify(seen));
"""


def notes(*oom_s: int | None) -> list[str | None]:
    run = ["node", "-e", RUN, str(OOM_JS), json.dumps(list(oom_s))]
    done = subprocess.run(run, capture_output=True, text=True, timeout=30, check=True)
    result: list[str | None] = json.loads(done.stdout)
    return result


def test_it_loads_the_oom_script_on_the_service_page(operator_client: Client) -> None:
    html = operator_client.get("/services/inventory/").content.decode()
    url = next(u for u in script_urls(html) if u.endswith("/oom.js"))
    response = operator_client.get(url)
    assert response.status_code == 200
    assert b"ballastOom" in response.content


def test_it_notes_the_time_to_oom_in_the_memory_cell() -> None:
    assert notes(45, 170, 3000) == ["OOM in ~45 s", "OOM in ~3 min", "OOM in ~50 min"]


def test_it_takes_the_note_away_when_the_pod_stops_growing() -> None:
    # Further out than an hour a trend says little: no note either.
    assert notes(170, None, 5400) == ["OOM in ~3 min", None, None]


def test_the_api_gives_each_pods_predicted_time_to_oom(operator_client: Client) -> None:
    shown = frame("inventory", int(time.time() * 1000))
    shown["pods"][0]["oom_s"] = 21
    service_history().append(shown)
    response = operator_client.get("/api/v1/services/inventory/pods/")
    assert response.status_code == 200
    assert [p["oom_s"] for p in response.json()] == [21]


def test_the_api_gives_null_for_a_pod_not_growing(operator_client: Client) -> None:
    service_history().append(frame("inventory", int(time.time() * 1000)))
    response = operator_client.get("/api/v1/services/inventory/pods/")
    assert [p["oom_s"] for p in response.json()] == [None]
