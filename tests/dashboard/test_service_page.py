"""The service detail page, its history for the first paint and the scripts it loads."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from dashboard.app import assets, checks
from dashboard.app.history import service_history
from dashboard.collector.frames import ServiceFrame

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_history() -> Iterator[None]:
    service_history.cache_clear()
    yield
    service_history.cache_clear()


def frame(service: str, t_unix_ms: int, rps: float = 10.0) -> ServiceFrame:
    return {
        "type": "service.frame",
        "service": service,
        "t": t_unix_ms,
        "pods": [
            {
                "pod": "inventory-0",
                "state": "READY",
                "weight": 100,
                "eff_weight": 100.0,
                "rps": rps,
                "err_s": 0.0,
                "in_b_s": 10,
                "out_b_s": 20,
                "p50": 1.0,
                "p90": 2.0,
                "p99": 3.0,
                "in_flight": 1,
                "phase": "Running",
                "ready": True,
                "cpu_m": 50,
                "mem": 64 << 20,
                "mem_limit": 128 << 20,
                "restarts": 1,
                "last_reason": "OOMKilled",
                "started": t_unix_ms - 3_600_000,
                "pod_rps": rps * 2,
                "pod_err_s": 0.0,
            }
        ],
        "totals": {
            "pods": 1,
            "ready": 1,
            "rps": rps,
            "err_s": 0.0,
            "err_ratio": 0.0,
            "p50": 1.0,
            "p99": 3.0,
            "in_flight": 1,
            "in_b_s": 10,
            "out_b_s": 20,
            "pod_rps": rps * 2,
        },
        "imbalance": {"max_mean": 1.0, "cv": 0.0, "busiest": "inventory-0", "flagged": False},
        "pod_imbalance": {
            "max_mean": 1.0,
            "cv": 0.0,
            "busiest": "inventory-0",
            "flagged": False,
        },
        "replicas": [{"id": "b0", "up": True}],
    }


def script_urls(html: str) -> list[str]:
    return re.findall(r'<script src="([^"]+)"', html)


def plotly_url_of(html: str) -> str:
    """plotly.js's URL: preloaded by the page, run by service.js once the page is up."""
    found = re.search(r'<link rel="preload" as="script" href="([^"]+/plotly\.min\.js)">', html)
    assert found is not None, "no preload of plotly.min.js"
    config = re.search(r'id="ballast-service" type="application/json">(.*?)</script>', html)
    assert config is not None and json.loads(config.group(1))["plotly_url"] == found[1]
    return found[1]


def test_it_sends_anonymous_visitors_to_the_login_page(client: Client) -> None:
    for path in ("/services/inventory/", "/services/inventory/history.json"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")


def test_it_keeps_the_scripts_from_anonymous_visitors(operator_client: Client) -> None:
    urls = script_urls(operator_client.get("/services/inventory/").content.decode())
    operator_client.logout()
    for url in urls:
        response = operator_client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_it_answers_404_for_a_service_not_configured(operator_client: Client) -> None:
    assert operator_client.get("/services/nosuch/").status_code == 404
    assert operator_client.get("/services/nosuch/history.json").status_code == 404


def test_it_links_each_service_on_the_index_to_its_page(operator_client: Client) -> None:
    body = operator_client.get("/").content.decode()
    assert 'href="/services/inventory/"' in body
    assert 'href="/services/payments/"' in body


def test_it_renders_the_page_with_local_scripts_only(operator_client: Client) -> None:
    response = operator_client.get("/services/inventory/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>inventory</code>" in html
    assert "cdn" not in html.lower()
    urls = script_urls(html)
    names = [url.rsplit("/", 1)[1] for url in urls]
    assert names == [
        "explain.js",
        "controls.js",
        "charts.js",
        "oom.js",
        "service.js",
        "automation.js",
    ]
    assert all(url.startswith("/assets/") for url in urls)
    config = re.search(r'id="ballast-service" type="application/json">(.*?)</script>', html)
    assert config is not None
    assert json.loads(config.group(1))["ws_path"] == "/ws/services/inventory/"


def test_it_serves_plotlys_basic_bundle_that_npm_installed(operator_client: Client) -> None:
    html = operator_client.get("/services/inventory/").content.decode()
    plotly_url = plotly_url_of(html)
    response = operator_client.get(plotly_url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert "immutable" in response["Cache-Control"]
    # The official basic bundle (scatter and bar: every trace the charts draw), the version
    # package-lock.json pins; not the full 4.8 MB one.
    locked = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    version = locked["packages"]["node_modules/plotly.js-basic-dist-min"]["version"]
    assert f"plotly.js (basic - minified) v{version}".encode() in response.content[:500]
    assert 500_000 < len(response.content) < 2_000_000


def test_it_says_how_to_install_plotly_when_it_is_missing(
    operator_client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(assets, "PLOTLY_JS", tmp_path / "plotly.min.js")
    for cached in (assets._plotly_bundle, assets.plotly_guard_ids):
        cached.cache_clear()
    monkeypatch.setattr(assets, "_BUNDLE_ASSETS", {})
    try:
        response = operator_client.get("/services/inventory/")
        assert response.status_code == 503
        assert "run `make install`" in response.content.decode()
        assert operator_client.get("/").status_code == 200  # the other pages still work
        [error] = checks.check_plotly_installed()
        assert error.id == "ballast.E002" and "make install" in error.msg
    finally:
        for cached in (assets._plotly_bundle, assets.plotly_guard_ids):
            cached.cache_clear()
    monkeypatch.undo()
    assert checks.check_plotly_installed() == []


def test_it_refuses_a_script_url_with_a_stale_hash(operator_client: Client) -> None:
    assert operator_client.get("/assets/0123456789abcdef/plotly.min.js").status_code == 404
    assert operator_client.get("/assets/0123456789abcdef/nosuch.js").status_code == 404


def test_it_returns_the_last_15_minutes_of_frames_in_order(operator_client: Client) -> None:
    now_ms = int(time.time() * 1000)
    history = service_history()
    history.append(frame("inventory", now_ms - 20 * 60_000, rps=1.0))
    history.append(frame("inventory", now_ms - 14 * 60_000, rps=2.0))
    history.append(frame("payments", now_ms - 10 * 60_000, rps=9.0))
    history.append(frame("inventory", now_ms - 1_000, rps=3.0))

    response = operator_client.get("/services/inventory/history.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    frames = response.json()
    assert [f["pods"][0]["rps"] for f in frames] == [2.0, 3.0]
    assert frames[0] == frame("inventory", now_ms - 14 * 60_000, rps=2.0)


def test_it_returns_an_empty_array_before_any_frame(operator_client: Client) -> None:
    response = operator_client.get("/services/payments/history.json")
    assert response.status_code == 200
    assert response.json() == []


def test_it_shows_no_template_comment_as_text(operator_client: Client) -> None:
    html = operator_client.get("/services/inventory/").content.decode()
    assert "{#" not in html and "#}" not in html
